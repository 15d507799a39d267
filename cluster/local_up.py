"""`python -m cluster.local_up [--keep]`: the real `ray up` / job / `ray down` cycle on this machine.

Ray's local provider drives a "cluster" of one head at 127.0.0.1 over ssh, exactly as
it drives on-premise machines: this is how to try the cluster path without a cloud.
It needs sshd and rsync (Debian: `apt-get install openssh-server rsync`); as root it
starts sshd on 127.0.0.1:22 if none listens. It authorises a key of its own
(~/.ssh/labelgen_local) and puts this virtualenv on the login shell's PATH in
~/.profile: `ray up` and `ray down` run `ray` in a login shell over ssh, and without
it `ray down` silently leaves the processes running.
Then: `ray up`, the label pipeline on the tiny demo as a Ray job (cluster.jobs),
`ray down`, and a check that no Ray process is left.
"""

import argparse
import getpass
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import yaml

from labelgen.cli import HelpFormatter

from .jobs import ROOT

KEY = os.path.expanduser("~/.ssh/labelgen_local")
PROFILE_MARK = "# labelgen: the virtualenv for ray up/down over ssh"
RAY_PROCESSES = ("raylet", "gcs_server")


def sshd_listening(host: str = "127.0.0.1", port: int = 22) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def start_sshd() -> None:
    """sshd on loopback only (as root), with host keys made if missing."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        raise RuntimeError("sshd is not installed: `apt-get install openssh-server rsync` (Debian), then rerun")
    if os.geteuid() != 0:
        raise RuntimeError("no sshd listens on 127.0.0.1:22 and only root can start one: start it, then rerun")
    subprocess.run(["ssh-keygen", "-A"], check=True, capture_output=True)
    os.makedirs("/run/sshd", exist_ok=True)
    subprocess.run([sshd, "-o", "ListenAddress=127.0.0.1"], check=True)
    for _ in range(50):
        if sshd_listening():
            return
        time.sleep(0.1)
    raise RuntimeError("sshd was started but does not listen on 127.0.0.1:22")


def authorise_key() -> None:
    """A key of our own, allowed to log in as this user."""
    os.makedirs(os.path.dirname(KEY), mode=0o700, exist_ok=True)
    if not os.path.exists(KEY):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "labelgen-local", "-f", KEY], check=True)
    pub = open(KEY + ".pub").read().strip()
    authorized = os.path.expanduser("~/.ssh/authorized_keys")
    lines = open(authorized).read().splitlines() if os.path.exists(authorized) else []
    if pub not in lines:
        with open(authorized, "a") as f:
            f.write(pub + "\n")
        os.chmod(authorized, 0o600)


def venv_on_login_path(bin_dir: str) -> None:
    """Last word in ~/.profile and ~/.bashrc: Ray's ssh commands run `bash --login -i` and
    source ~/.bashrc, where a pyenv or conda init would otherwise put its python first."""
    line = f'export PATH="{bin_dir}:$PATH"  {PROFILE_MARK}'
    for name in ("~/.profile", "~/.bashrc"):
        path = os.path.expanduser(name)
        lines = open(path).read().splitlines() if os.path.exists(path) else []
        if lines[-1:] != [line]:
            kept = [x for x in lines if PROFILE_MARK not in x]  # replace an older venv's line
            with open(path, "w") as f:
                f.write("\n".join([*kept, line]) + "\n")


def check_login(user: str) -> None:
    """A shell over ssh as Ray opens it must find this virtualenv's ray and python."""
    out = subprocess.run(
        ["ssh", "-i", KEY, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         f"{user}@127.0.0.1", "bash --login -i -c 'source ~/.bashrc; command -v ray python'"],
        capture_output=True, text=True, timeout=30,
    )
    bin_dir = os.path.dirname(sys.executable)
    want = [os.path.join(bin_dir, "ray"), os.path.join(bin_dir, "python")]
    if out.returncode != 0 or out.stdout.split() != want:
        raise RuntimeError(f"ssh {user}@127.0.0.1 finds {out.stdout.split() or 'nothing'} (want {want}): "
                           f"{out.stderr.strip()[-500:]}")


def cluster_config(user: str, gcs_port: int, dashboard_port: int) -> dict:
    """Ray's local provider: one head at 127.0.0.1, no workers; loopback only."""
    start = (f"ray start --head --node-ip-address=127.0.0.1 --port={gcs_port} --dashboard-host=127.0.0.1 "
             f"--dashboard-port={dashboard_port} --num-cpus=2 --disable-usage-stats "
             "--autoscaling-config=~/ray_bootstrap_config.yaml")
    return {
        "cluster_name": "labelgen-local",
        "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
        "auth": {"ssh_user": user, "ssh_private_key": KEY},
        "setup_commands": ["python -c 'import labelgen, trainer'"],  # the project is installed in the venv
        "head_start_ray_commands": ["ray stop", start],
        "worker_start_ray_commands": [],
    }


def ray_processes() -> list[str]:
    return [p.info["name"] for p in psutil.process_iter(["name"]) if p.info["name"] in RAY_PROCESSES]


def prepare() -> str:
    """sshd, the key and the login PATH; returns the ssh user."""
    for tool in ("ssh", "rsync"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: `apt-get install openssh-server rsync` (Debian), then rerun")
    if not sshd_listening():
        start_sshd()
    user = getpass.getuser()
    authorise_key()
    venv_on_login_path(os.path.dirname(sys.executable))
    check_login(user)
    return user


def up_job_down(jobs: list[list[str]], gcs_port: int = 6390, dashboard_port: int = 8275, keep: bool = False) -> dict:
    """`ray up`, each of `jobs` (cluster.jobs arguments, e.g. ["labels", "store=..."]) as a
    Ray job, `ray down`; what happened, for a person or a test."""
    user = prepare()
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ""}
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "local_cluster.yaml")
        with open(config, "w") as f:
            yaml.safe_dump(cluster_config(user, gcs_port, dashboard_port), f)
        t0 = time.time()
        up = subprocess.run([ray, "up", "-y", "--no-config-cache", config], capture_output=True, text=True,
                            timeout=600, env=env)
        result["up_s"], result["up_rc"] = time.time() - t0, up.returncode
        if up.returncode != 0:
            raise RuntimeError(f"ray up failed:\n{(up.stdout + up.stderr)[-3000:]}")
        try:
            result["jobs"] = []
            for args in jobs:
                job = subprocess.run(
                    [sys.executable, "-m", "cluster.jobs", f"--address=http://127.0.0.1:{dashboard_port}", *args],
                    capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT,
                )
                result["jobs"].append({"args": args, "rc": job.returncode, "log": job.stdout + job.stderr})
        finally:
            if not keep:
                down = subprocess.run([ray, "down", "-y", config], capture_output=True, text=True, timeout=300, env=env)
                result["down_rc"] = down.returncode
                for _ in range(30):  # raylet and GCS take a moment to exit
                    if not (left := ray_processes()):
                        break
                    time.sleep(1)
                result["left_after_down"] = left
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local_up", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the cluster up (then: ray down)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="labelgen.run overrides (default: the demo)")
    a = parser.parse_args(argv)
    overrides = a.overrides or [f"store={os.path.abspath('labelstore-local-cluster')}"]
    try:
        r = up_job_down([["labels", *overrides]], keep=a.keep)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (job,) = r["jobs"]
    print(job["log"])
    print(f"ray up {r['up_s']:.0f} s; job exit {job['rc']}; "
          + ("left up" if a.keep else f"ray down exit {r['down_rc']}, Ray processes left: {r['left_after_down'] or 'none'}"))
    return 0 if job["rc"] == 0 and not r.get("left_after_down") else 1


if __name__ == "__main__":
    sys.exit(main())
