"""`python -m cluster.gpu_check [address=A] [actors=N]`: are GPUs pinned one per actor?

Starts N actors that each ask for one GPU, as the feature stage's do, and prints
(as JSON) where each landed and what it sees (node, CUDA_VISIBLE_DEVICES, Ray's GPU
ids, whether torch sees CUDA), then the cluster's live nodes. With actors=0 it
only lists the nodes: handy to watch the autoscaler add and remove them.
"""

import json
import os
import sys
from dataclasses import dataclass

import ray

from labelgen.cli import run_command


@dataclass
class GpuCheckConf:
    address: str = os.environ.get("RAY_ADDRESS", "auto")  # the cluster (RAY_ADDRESS)
    actors: int = 2  # actors asking for one GPU each


default_conf = GpuCheckConf


# Restarted elsewhere when its node goes away: an idle node the autoscaler is removing can
# still be handed a new actor.
@ray.remote(num_gpus=1, num_cpus=1, max_restarts=2, max_task_retries=2)
class GpuProbe:
    def report(self) -> dict:
        import torch

        return {
            "node": ray.get_runtime_context().get_node_id(),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "torch_cuda": torch.cuda.is_available(),
        }


def check(actors: int) -> dict:
    probes = [GpuProbe.remote() for _ in range(actors)]  # pending until the autoscaler adds GPU nodes
    reports = ray.get([p.report.remote() for p in probes])
    for p in probes:
        ray.kill(p)
    nodes = [
        {"node": n["NodeID"], "resources": {k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU")}}
        for n in ray.nodes()
        if n["Alive"]
    ]
    return {"actors": reports, "nodes": nodes}


def report(conf) -> int:
    ray.init(address=conf.address, logging_level="ERROR", log_to_driver=False)
    print(json.dumps(check(conf.actors), indent=1))
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, report, argv, announce=False)


if __name__ == "__main__":
    sys.exit(main())
