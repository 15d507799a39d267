"""Connecting to Ray: a cluster when an address is given, else a private local instance.
Ray is imported where it is used: a config, and so `--help`, never loads it."""

import asyncio
import os
import shlex
from dataclasses import dataclass

from . import console


@dataclass
class RayConf:
    address: str | None = None  # default: RAY_ADDRESS (set under `ray job submit`), else a local instance
    num_cpus: int | None = None  # local instance only; default: all cores


default_conf = RayConf


def cluster_address(conf) -> str | None:
    """The cluster a run joins; None: it starts a local instance, this machine its one node."""
    return conf.address or os.environ.get("RAY_ADDRESS") or None


def init_ray(conf) -> str:
    """Start or join Ray; returns a short description for the log and the run record.

    Ray's own loggers, here and in its workers, log at `console.ray_level()`. The local
    instance runs the dashboard on 127.0.0.1 because Ray's state API lives there (Ray
    Train's placement-group cleaner polls it); the description gives its address, to watch
    tasks, actors and Ray Train's runs in a browser."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return "already initialised"
    address = cluster_address(conf)
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=console.ray_level())
        return f"cluster at {address}"
    # One machine: no node can be preempted, so Ray Train needs no preemption watcher (an
    # actor that Ray warns about at every start, ray-project/ray#53727).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Bind a local instance to loopback: nothing outside this machine can reach it.
    context = ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        num_cpus=conf.num_cpus,
        logging_level=console.ray_level(),
    )
    auth = (
        (
            "token authentication on (Ray's default: other clients join with RAY_AUTH_MODE=token, "
            "RAY_AUTH_MODE=disabled opts out)"
        )
        if os.environ.get("RAY_AUTH_MODE") == "token"
        else "no authentication"
    )
    dashboard = f"; dashboard http://{context.dashboard_url}" if context.dashboard_url else ""  # empty when it failed
    return f"local instance on 127.0.0.1, {auth}{dashboard}"


def wait_each(refs):
    """(ref, result) of each task as it finishes, fetched one at a time, so that the driver
    holds one result at a time and a progress bar can move with each."""
    import ray

    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield done[0], ray.get(done[0])


def on_every_node(fn, *args) -> list:
    """`fn(*args)` once on each alive node of the cluster (e.g. to clean its local disk)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(fn)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    return ray.get(
        [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(*args) for n in nodes]
    )


def submit_job(address: str, argv: list[str], runtime_env: dict | None = None):
    """Submit `argv` as a Ray job to the cluster whose dashboard is at `address`;
    returns (client, job id)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    return client, client.submit_job(entrypoint=shlex.join(argv), runtime_env=runtime_env)


def follow_job(client, job: str, timeout_s: float = 24 * 3600.0, echo=print) -> str:
    """Echo a job's log as Ray streams it (`JobSubmissionClient.tail_job_logs`: from the
    start, then each chunk as the job writes it, until the job ends), or stop the job at the
    timeout; its final status."""

    async def tail():
        async for chunk in client.tail_job_logs(job):
            echo(chunk.rstrip("\n"))

    try:
        asyncio.run(asyncio.wait_for(tail(), timeout_s))
    except asyncio.TimeoutError:
        client.stop_job(job)
        return f"STOPPED after {timeout_s:.0f} s"
    return str(client.get_job_status(job)).rsplit(".", 1)[-1]
