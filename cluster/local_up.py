"""`python -m cluster.local_up [keep=true | down=DIR] [labelgen.run overrides]`: the real
`ray up` and a Ray job on this machine, then a teardown that stops only what it started.

Ray's local provider drives a "cluster" of one head at 127.0.0.1 over ssh, exactly as
it drives on-premise machines: this is how to try the cluster path without a cloud.
It needs sshd and rsync (Debian: `apt-get install openssh-server rsync`); as root it
starts sshd on 127.0.0.1:22 if none listens. It authorises a key of its own
(~/.ssh/labelgen_local) and puts this virtualenv on the login shell's PATH in
~/.profile: `ray up` runs `ray` in a login shell over ssh.
Then: `ray up`, the label pipeline on the tiny demo as a Ray job (cluster.jobs), the
teardown, and a check that none of the cluster's processes is left.

Other Ray instances on this machine (a label run in another shell, a test's head) are
left alone. The head gets a directory of its own (Ray's temp dir, with its sessions and
sockets, and `ray up`'s record of the cluster) and free ports, and its `ray start` runs
with LABELGEN_RAY_OWNER set to that directory, which every process it starts inherits.
The teardown ends those processes and their children, then removes the directory. It
does not run `ray down`: on the local provider that is `ray stop` over ssh, which ends
every Ray process on the machine, and then a note in that record.
"""

import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields

import psutil
import yaml

from labelgen.cli import OPTIONS, run_command

from .jobs import ROOT


@dataclass
class LocalUpConf:
    keep: bool = False  # leave the cluster up (then: down=DIR, as printed)
    down: str | None = None  # take down a cluster left up by keep=true: its processes only


default_conf = LocalUpConf

KEY = os.path.expanduser("~/.ssh/labelgen_local")
PROFILE_MARK = "# labelgen: the virtualenv for ray up/down over ssh"
OWNER = "LABELGEN_RAY_OWNER"  # in the environment of every process of a Ray instance started here
CONFIG = "local_cluster.yaml"  # in the cluster's directory: what `down=` looks for before removing it
# `ray start` flags: the ports another instance on its defaults would hold too
PORT_FLAGS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port")
STOP_ORDER = {"raylet": 0, "gcs_server": 2}  # `ray stop`'s, the rest between


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
        [
            "ssh",
            "-i",
            KEY,
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            f"{user}@127.0.0.1",
            "bash --login -i -c 'source ~/.bashrc; command -v ray python'",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    bin_dir = os.path.dirname(sys.executable)
    want = [os.path.join(bin_dir, "ray"), os.path.join(bin_dir, "python")]
    if out.returncode != 0 or out.stdout.split() != want:
        raise RuntimeError(
            f"ssh {user}@127.0.0.1 finds {out.stdout.split() or 'nothing'} (want {want}): {out.stderr.strip()[-500:]}"
        )


def free_ports(n: int) -> list[int]:
    """n distinct ports free now on loopback, from the kernel's ephemeral range (clear of
    Ray's worker ports, 10002-19999)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def head_start_command(home: str, ports: dict[str, int]) -> str:
    """`ray start --head` in Ray temp dir home/ray, on `ports`, marked as ours. RAY_TMPDIR
    puts the head's autoscaler's record of the cluster where `ray up`'s is: in home."""
    flags = " ".join(f"--{flag}={port}" for flag, port in ports.items())
    home = shlex.quote(home)
    return (
        f"{OWNER}={home} RAY_TMPDIR={home} ray start --head --temp-dir={home}/ray --node-ip-address=127.0.0.1 "
        f"{flags} --dashboard-host=127.0.0.1 --num-cpus=2 --disable-usage-stats "
        "--autoscaling-config=~/ray_bootstrap_config.yaml"
    )


def cluster_config(user: str, home: str, ports: dict[str, int]) -> dict:
    """Ray's local provider: one head at 127.0.0.1, no workers; loopback only. No `ray stop`
    before `ray start` (Ray's default): it would end every Ray process on the machine."""
    return {
        "cluster_name": "labelgen-local",
        "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
        "auth": {"ssh_user": user, "ssh_private_key": KEY},
        "setup_commands": ["python -c 'import labelgen, trainer'"],  # the project is installed in the venv
        "head_start_ray_commands": [head_start_command(home, ports)],
        "worker_start_ray_commands": [],
    }


def running(procs) -> list[psutil.Process]:
    """Those not yet ended (a zombie has ended: only its parent has not collected it)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def owned_processes(owner: str) -> list[psutil.Process]:
    """The processes of the Ray instance started with OWNER=owner: its daemons inherit the
    variable; the workers, agents and jobs, whose process titles overwrite their
    environment, are found as the daemons' children."""
    family = {}
    for p in psutil.process_iter():
        try:
            if p.environ().get(OWNER) == owner:
                family.update((q.pid, q) for q in [p, *p.children(recursive=True)])
        except psutil.Error:  # ended meanwhile, or another user's
            pass
    return running(family.values())


def end(procs: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM, and SIGKILL to those still running after grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for p in running(procs):
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        deadline = time.time() + wait_s
        while running(procs) and time.time() < deadline:
            time.sleep(0.1)


def name_of(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.NoSuchProcess:
        return "(ended)"


def stop_owned(owner: str, grace_s: float = 10.0) -> list[str]:
    """End the instance started with OWNER=owner in `ray stop`'s order: the raylet (its
    workers go with it), the others, the GCS last (ended all at once, the raylet and
    the GCS outlived a 10 s grace). Returns what is left of it ("pid name")."""
    procs = owned_processes(owner)
    rank = {p.pid: STOP_ORDER.get(name_of(p), 1) for p in procs}
    for r in (0, 1, 2):
        end([p for p in procs if rank[p.pid] == r], grace_s)
    return [f"{p.pid} {name_of(p)}" for p in owned_processes(owner)]


def take_down(home: str) -> list[str]:
    """Stop the instance started with OWNER=home and remove home; what is left running."""
    left = stop_owned(home)
    if not left:
        shutil.rmtree(home, ignore_errors=True)
    return left


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


def up_job_down(jobs: list[list[str]], keep: bool = False) -> dict:
    """`ray up`, each of `jobs` (cluster.jobs arguments, e.g. ["labels", "store=..."]) as a
    Ray job, and the teardown (with `keep`, only if `ray up` failed); what happened, for a
    person or a test."""
    user = prepare()
    home = tempfile.mkdtemp(prefix="labelgen-local-")  # short: Ray's socket paths are limited to 107 bytes
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    config = os.path.join(home, CONFIG)
    with open(config, "w") as f:
        yaml.safe_dump(cluster_config(user, home, ports), f)
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": "", "RAY_TMPDIR": home}
    result = {"home": home, "dashboard": f"http://127.0.0.1:{ports['dashboard-port']}", "jobs": []}
    kept = False
    try:
        t0 = time.time()
        up = subprocess.run(
            [ray, "up", "-y", "--no-config-cache", config], capture_output=True, text=True, timeout=600, env=env
        )
        result["up_s"] = time.time() - t0
        if up.returncode != 0:
            raise RuntimeError(f"ray up failed:\n{(up.stdout + up.stderr)[-3000:]}")
        kept = keep
        for args in jobs:
            job = subprocess.run(
                [sys.executable, "-m", "cluster.jobs", f"address={result['dashboard']}", *args],
                capture_output=True,
                text=True,
                timeout=1200,
                env=env,
                cwd=ROOT,
            )
            result["jobs"].append({"args": args, "rc": job.returncode, "log": job.stdout + job.stderr})
    finally:
        if not kept:
            result["left_after_down"] = take_down(home)
    return result


def down(home: str) -> int:
    """`down=DIR`: the teardown of a cluster left up by `keep=true`."""
    home = os.path.abspath(home)
    if not os.path.exists(os.path.join(home, CONFIG)):
        print(f"error: {home} has no {CONFIG}: not a directory of cluster.local_up", file=sys.stderr)
        return 2
    left = take_down(home)
    print(f"processes left: {', '.join(left)} (rerun to retry)" if left else f"stopped; {home} removed")
    return 1 if left else 0


def up(conf, overrides: list[str]) -> int:
    if conf.down:
        return down(conf.down)
    overrides = overrides or [f"store={os.path.abspath('labelstore-local-cluster')}"]
    try:
        r = up_job_down([["labels", *overrides]], keep=conf.keep)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (job,) = r["jobs"]
    print(job["log"])
    print(
        f"ray up {r['up_s']:.0f} s; job exit {job['rc']}; "
        + (
            f"left up, dashboard {r['dashboard']}; take it down with: python -m cluster.local_up down={r['home']}"
            if conf.keep
            else f"its processes left: {', '.join(r['left_after_down']) or 'none'}"
        )
    )
    return 0 if job["rc"] == 0 and not r.get("left_after_down") else 1


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the rest: labelgen.run's; a flag is refused here, before any cluster starts
    keys = {f.name for f in fields(default_conf)}
    ours = [a for a in argv if a in OPTIONS or a.startswith("-") or a.split("=", 1)[0] in keys]
    return run_command(
        default_conf,
        lambda conf: up(conf, [a for a in argv if a not in ours]),
        ours,
        tail=" [labelgen.run key=value ...]",
        announce=False,
    )


if __name__ == "__main__":
    sys.exit(main())
