"""`python -m cluster.jobs [--address URL] [--detach] JOB [ARGS ...]`: the service's entry
points as Ray jobs, with the runtime environment of cluster/runtime_env.yaml.

JOB is one of: labels (labelgen.run), sphere (labelgen.train_sphere), retrain
(trainer.retrain), evaluate (trainer.evaluate), schedule (trainer.schedule: a
long-running job that retrains every `every_s`). ARGS go to the entry point as they are.
The address defaults to RAY_ADDRESS, else the dashboard on 127.0.0.1:8265 (what
`ray dashboard ray_cluster.yaml` forwards).
"""

import argparse
import os
import sys

import yaml

from labelgen.cli import HelpFormatter
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


def runtime_env(path: str = RUNTIME_ENV) -> dict:
    """The jobs' runtime environment, its working_dir resolved against the repository."""
    with open(path) as f:
        env = yaml.safe_load(f)
    env["working_dir"] = os.path.normpath(os.path.join(ROOT, env.get("working_dir", ".")))
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.jobs", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265",
                        help="the dashboard of the cluster (RAY_ADDRESS)")
    parser.add_argument("--detach", action="store_true", help="submit and return; follow with `ray job logs -f`")
    parser.add_argument("--timeout-s", type=float, default=7 * 24 * 3600.0, help="stop the job after this long")
    parser.add_argument("job", choices=sorted(ENTRYPOINTS), help="which entry point: " + ", ".join(f"{k} = {v}" for k, v in ENTRYPOINTS.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its key=value overrides (see python -m ENTRY --help)")
    a = parser.parse_args(argv)
    command = ["python", "-m", ENTRYPOINTS[a.job], *a.args]
    client, job = submit_job(a.address, command, runtime_env())
    print(f"submitted job {job}: {' '.join(command)}", flush=True)
    if a.detach:
        print(f"follow it with: ray job logs -f --address {a.address} {job}")
        return 0
    status = follow_job(client, job, a.timeout_s)
    print(f"job {job}: {status}")
    return 0 if status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
