"""A scale model: wall time and cost of 1M images on N GPU nodes, from measured stage costs.

Measured here (one CPU core): the chain stage's nearest neighbours of an image pair
(`labelgen.chain.nearest`) at the demo's size and at DINOv2-B's (the 60 x 60 grid's
foreground, 768-d), the distinct pairs per tuple, and the per-tuple remainder on the demo.
Taken from the hardware's data sheets (stated, not measured): the GPU's bf16 rate and
the fraction of it a ViT reaches, prices, and the network. The FLOPs of DINOv2-B at
840 px are counted, not assumed. The cache holds the foreground cells and their context
ring: `cache_fraction` of the full grid's bytes, measured (benchmarks.features.cache_cut_dinov2).
"""

import math
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from labelgen import pairing
from labelgen.chain import nearest

# Stated assumptions (AWS us-west-2 on-demand prices, NVIDIA A10G data sheet)
A10G_BF16_FLOPS = 125e12  # dense tensor-core peak
VIT_GPU_EFFICIENCY = 0.4  # share of the peak a ViT-B forward at batch 32 reaches on an A10G
G5_XLARGE_USD_H = 1.006  # 1 A10G, 4 vCPU
HEAD_USD_H = 0.384  # m5.2xlarge, 8 vCPU
CPUS_PER_GPU_NODE = 4
HEAD_CPUS = 8
S3_USD_GB_MONTH = 0.023
NODE_GBYTES_S = 1.25  # 10 Gbit/s per node from S3
FEATURE_BYTES = 60 * 60 * 768 * 2  # one full DINOv2-B grid in float16 (what the cache held before)

# The workload
IMAGES = 1_000_000
IMAGES_PER_CATEGORY = 1000
TUPLES_PER_IMAGE = pairing.default_conf.tuples_per_image  # each image anchors as many, whatever its category's size
GRID_CELLS = 60 * 60  # DINOv2-B at 840 px
TUPLES_PER_TASK = 256  # labels.tuples_per_task


def dinov2_b_flops() -> int:
    import timm  # here, not for --help

    with torch.device("meta"):
        model = timm.create_model("vit_base_patch14_dinov2", pretrained=False, dynamic_img_size=True)
        x = torch.randn(1, 3, 840, 840)
    counter = FlopCounterMode(display=False)
    with counter:
        model.forward_features(x)
    return counter.get_total_flops()


def pair_seconds(n: int, dim: int, reps: int = 3) -> float:
    fa = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    fb = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    nearest(fa, fb, 1)
    t0 = time.perf_counter()
    for _ in range(reps):
        nearest(fa, fb, 1)
    return (time.perf_counter() - t0) / reps


def scale_model(
    chain: dict, demo_fg: float, demo_dim: int, fg_fraction: float, nodes=(1, 4, 16, 64), cache_fraction: float = 1.0
) -> dict:
    """`chain`: the chain benchmark (service seconds, tuples and distinct pairs on the demo, one
    core); `fg_fraction`: the share of a grid that is foreground (measured on the 3D collection);
    `cache_fraction`: a cache file's bytes over the full grid file's (cache_cut_dinov2; 1: the full grid)."""
    torch.set_num_threads(1)
    flops = dinov2_b_flops()
    gpu_img_s = A10G_BF16_FLOPS * VIT_GPU_EFFICIENCY / flops / 2  # the image and its mirrored twin
    fg_patches = round(GRID_CELLS * fg_fraction)
    pairs_per_tuple = (chain["adjacent_pairs"] + chain["other_pairs"]) / chain["tuples"]
    pair_demo, pair_dino = pair_seconds(round(demo_fg), demo_dim), pair_seconds(fg_patches, 768)
    per_tuple_demo = max(chain["service_s"] / chain["tuples"] - pairs_per_tuple * pair_demo, 0.0)
    tuple_s = pairs_per_tuple * pair_dino + per_tuple_demo * fg_patches / demo_fg  # index work grows with patches
    categories = IMAGES // IMAGES_PER_CATEGORY
    tuples = IMAGES * TUPLES_PER_IMAGE
    chunks = math.ceil(IMAGES_PER_CATEGORY * TUPLES_PER_IMAGE / TUPLES_PER_TASK)  # per category
    cache_bytes = IMAGES * 2 * FEATURE_BYTES  # the image and its mirrored twin
    rows = []
    for n in nodes:
        # node-local copies (labelgen.node_copy): a category's images are read once by each node that chains
        # one of its chunks, at worst every node (the head and n workers)
        read_bytes_full = categories * min(n + 1, chunks) * IMAGES_PER_CATEGORY * FEATURE_BYTES
        read_bytes = read_bytes_full * cache_fraction
        stages = {
            "features (GPU)": IMAGES / (gpu_img_s * n) / 3600,
            "chains (CPU)": tuples * tuple_s / (HEAD_CPUS + CPUS_PER_GPU_NODE * n) / 3600,
            "feature reads (network)": read_bytes / (NODE_GBYTES_S * 1e9 * (n + 1)) / 3600,
        }
        chain_h = max(stages["chains (CPU)"], stages["feature reads (network)"])  # reads overlap compute
        wall_h = stages["features (GPU)"] + chain_h  # the stages run one after the other
        rows.append(
            {
                "gpus": n,
                **{k: round(v, 3) for k, v in stages.items()},
                "wall_h": wall_h,
                "bottleneck": max(stages, key=stages.get),
                "usd": wall_h * (HEAD_USD_H + n * G5_XLARGE_USD_H),
            }
        )
    return {
        "dinov2_b_gflops": flops / 1e9,
        "gpu_images_per_s": gpu_img_s,
        "pair_demo_s": pair_demo,
        "pair_dino_s": pair_dino,
        "fg_patches": fg_patches,
        "pairs_per_tuple": pairs_per_tuple,
        "tuple_s": tuple_s,
        "tuples": tuples,
        "rows": rows,
        "chain_read_tb": read_bytes / 1e12,  # at the most nodes
        "chain_read_tb_full": read_bytes_full / 1e12,
        "cache_tb": cache_bytes * cache_fraction / 1e12,
        "cache_tb_full": cache_bytes / 1e12,
        "cache_usd_month": cache_bytes * cache_fraction / 1e9 * S3_USD_GB_MONTH,
        "cache_usd_month_full": cache_bytes / 1e9 * S3_USD_GB_MONTH,
    }


if __name__ == "__main__":
    from benchmarks import library_main

    sys.exit(library_main(__spec__.name, __doc__))
