"""`python -m cluster.jobs [key=value ...] JOB [ARGS ...]`: the service's entry points as
Ray jobs, with the runtime environment of cluster/runtime_env.yaml.

JOB is one of: labels (labelgen.run), sphere (labelgen.train_sphere), retrain
(trainer.retrain), evaluate (trainer.evaluate), schedule (trainer.schedule: a
long-running job that retrains every `every_s`). The keys before JOB are this tool's;
ARGS, everything after JOB, go to the entry point as they are. The address defaults to
RAY_ADDRESS, else the dashboard on 127.0.0.1:8265 (what `ray dashboard ray_cluster.yaml`
forwards).
"""

import os
import sys
from dataclasses import dataclass

import yaml

from labelgen.cli import run_command
from labelgen.config import ConfigError
from labelgen.ray_utils import follow_job, submit_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME_ENV = os.path.join(ROOT, "cluster", "runtime_env.yaml")
ENTRYPOINTS = {
    "labels": "labelgen.run",
    "sphere": "labelgen.train_sphere",
    "retrain": "trainer.retrain",
    "evaluate": "trainer.evaluate",
    "schedule": "trainer.schedule",
}


@dataclass
class JobConf:
    address: str = os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"  # the dashboard of the cluster
    # (RAY_ADDRESS)
    detach: bool = False  # submit and return; follow with `ray job logs -f`
    timeout_s: float = 7 * 24 * 3600.0  # stop the job after this long


default_conf = JobConf


def runtime_env(path: str = RUNTIME_ENV) -> dict:
    """The jobs' runtime environment, its working_dir resolved against the repository."""
    with open(path) as f:
        env = yaml.safe_load(f)
    env["working_dir"] = os.path.normpath(os.path.join(ROOT, env.get("working_dir", ".")))
    return env


def submit(conf, job: list[str]) -> int:
    if not job:
        raise ConfigError(f"name a JOB: one of {', '.join(ENTRYPOINTS)}")
    command = ["python", "-m", ENTRYPOINTS[job[0]], *job[1:]]
    client, job_id = submit_job(conf.address, command, runtime_env())
    print(f"submitted job {job_id}: {' '.join(command)}", flush=True)
    if conf.detach:
        print(f"follow it with: ray job logs -f --address {conf.address} {job_id}")
        return 0
    status = follow_job(client, job_id, conf.timeout_s)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    at = next((i for i, a in enumerate(argv) if a in ENTRYPOINTS), len(argv))  # ours before JOB, the job's after
    job = argv[at:]
    return run_command(default_conf, lambda conf: submit(conf, job), argv[:at], tail=" JOB [ARGS ...]", announce=False)


if __name__ == "__main__":
    sys.exit(main())
