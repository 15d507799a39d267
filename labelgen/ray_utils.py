"""Connecting to Ray: a cluster when an address is given, else a private local instance."""

import os

import ray

default_conf = {
    "address": None,  # default: RAY_ADDRESS (set under `ray job submit`), else a local instance
    "num_cpus": None,  # local instance only; default: all cores
}


def init_ray(conf) -> str:
    """Start or join Ray; returns a short description for the log and the run record."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return "already initialised"
    address = conf.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return f"cluster at {address}"
    # Bind a local instance to loopback: nothing outside this machine can reach it.
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=conf.num_cpus)
    return "local instance on 127.0.0.1"
