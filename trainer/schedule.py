"""`python -m trainer.schedule every_s=3600 [address=http://head:8265] [max_runs=N] -- RETRAIN ARGS`

Runs `python -m trainer.retrain RETRAIN ARGS` every `every_s` seconds: as a Ray job on
the cluster whose dashboard is at `address` (the job API), else as a local process.
For cron, call `python -m trainer.retrain` directly instead.
"""

import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from labelgen.cli import run_command
from labelgen.ray_utils import follow_job, submit_job

log = logging.getLogger("trainer.schedule")


@dataclass
class ScheduleConf:
    every_s: float = 3600.0  # seconds from one retrain's start to the next
    address: str | None = None  # a Ray dashboard address: submit through the job API
    max_runs: int | None = None  # stop after this many runs (default: run forever)
    job_timeout_s: float = 24 * 3600.0  # a retrain job still running then is stopped


default_conf = ScheduleConf


def run_once(conf, args: list[str]) -> bool:
    """One retrain: True if it succeeded."""
    if not conf.address:
        return subprocess.run([sys.executable, "-m", "trainer.retrain", *args]).returncode == 0
    client, job = submit_job(conf.address, ["python", "-m", "trainer.retrain", *args])
    log.info("submitted trainer.retrain %s as job %s", shlex.join(args), job)
    status = follow_job(client, job, conf.job_timeout_s, echo=log.info)
    log.info("job %s: %s", job, status)
    return status == "SUCCEEDED"


def repeat(conf, args: list[str]) -> int:
    runs = ok = 0
    while conf.max_runs is None or runs < conf.max_runs:
        started = time.time()
        ok += run_once(conf, args)
        runs += 1
        log.info("retrain %d done (%d succeeded)", runs, ok)
        if conf.max_runs is not None and runs >= conf.max_runs:
            break
        time.sleep(max(0.0, conf.every_s - (time.time() - started)))
    return 0 if ok == runs else 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    return run_command(default_conf, lambda conf: repeat(conf, args), ours, tail=" [-- RETRAIN ARGS]")


if __name__ == "__main__":
    sys.exit(main())
