"""`python -m benchmarks [--quick] [--out BENCHMARKS.md]`: the service side by side with its
yardsticks, in one run on this machine; prints the tables and writes them to --out.

Every figure that matters is a ratio of two things measured here in the same run
(timings on shared machines are noisy; ratios much less so).
"""

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from labelgen import run
from labelgen.cli import HelpFormatter
from labelgen.features import FeatureWorker

from .chains import bench_chains
from .features import bench_backbones, matmul_flops
from .memory import bench_memory
from .scale import scale_model

TARGETS = {"chain_speedup": 20.0, "of_bound": 0.6, "memory_growth": 1.5}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "python": platform.python_version(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def extract(df, backbone_conf, size, cache_root, fingerprint, batch=8) -> dict:
    """All demo features through one in-process feature actor (what a Ray actor does)."""
    worker = FeatureWorker(backbone_conf, size, cache_root, fingerprint, threads=os.cpu_count(), flips=True)
    rows = df[["image_id", "uri", "mask_uri"]].astype(object).to_dict("list")
    t0, fg = time.perf_counter(), []
    for s in range(0, len(df), batch):
        out = worker({k: v[s : s + batch] for k, v in rows.items()})
        fg.extend(out["n_fg"])
    return {"images": len(df), "images_per_s": len(df) / (time.perf_counter() - t0), "mean_fg": float(np.mean(fg)),
            "backbone": worker.backbone}


def table(rows: list[dict], fmt: dict | None = None) -> str:
    fmt = fmt or {}
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [format(r[k], fmt.get(k, ".3g")) if isinstance(r[k], float) else str(r[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tuples, no memory runs (~3 min)")
    parser.add_argument("--out", default="BENCHMARKS.md", help="the report to write")
    parser.add_argument("--workdir", default="data/bench", help="demo images, features and stores of the runs")
    a = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']:.0f} GiB; torch {m['torch']}", flush=True)

    conf = run.parse(["data.builtin=demo", f"data.demo.root={a.workdir}", f"store={a.workdir}/store"])
    _, df, backbone_conf, _, size, fingerprint = run.prepare(conf)
    cache_root = os.path.join(a.workdir, "features")
    torch.set_num_threads(m["cores"])
    peak = matmul_flops()
    print(f"[1/4] features: {len(df)} demo images, both flips, one actor on {m['cores']} threads", flush=True)
    feats = extract(df, backbone_conf, size, cache_root, fingerprint)
    backbones = bench_backbones(feats["backbone"], size, 8, peak)
    actor_share = 2 * feats["images_per_s"] / backbones[1]["images_per_s"]  # 2 passes per image (flip)

    torch.set_num_threads(1)
    peak_1 = matmul_flops()
    print("[2/4] chains: the published per-tuple loop vs the service's chain stage, one core each", flush=True)
    chain = bench_chains(df, conf, cache_root, fingerprint, 15 if a.quick else 60)
    print("[3/4] memory: " + ("skipped (--quick)" if a.quick else "label runs over 40 and 400 images"), flush=True)
    mem = [] if a.quick else bench_memory(os.path.abspath(a.workdir))
    print("[4/4] scale model", flush=True)
    scale = scale_model(chain, feats["mean_fg"], 288)

    growth = mem[1]["peak_mb"] / mem[0]["peak_mb"] if mem else float("nan")
    report = render(m, peak, peak_1, feats, backbones, actor_share, chain, mem, growth, scale)
    print(report)
    with open(a.out, "w") as f:
        f.write(report + "\n")
    print(f"written to {a.out}")
    return 0


def render(m, peak, peak_1, feats, backbones, actor_share, chain, mem, growth, scale) -> str:
    ok = lambda v, t, less=False: ("met" if (v < t if less else v >= t) else "NOT met")  # noqa: E731
    mobilenet = backbones[1]["of_bound"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks` (`make bench`); every ratio is measured side by side in one run.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']:.0f} GiB, Python {m['python']}, torch {m['torch']}, "
        f"{m['date']}. Dense float32 matmul: {peak / 1e9:.0f} GFLOP/s on {m['cores']} threads, {peak_1 / 1e9:.0f} on one.",
        "",
        "## Summary",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| chain stage >= {TARGETS['chain_speedup']:.0f}x the per-tuple reference per core, same labels | "
        f"{chain['speedup']:.1f}x, labels identical: {chain['identical']} | {ok(chain['speedup'], TARGETS['chain_speedup'])} |",
        f"| features >= {TARGETS['of_bound']:.0%} of the FLOP bound | MobileNetV2 {mobilenet:.0%} (channels-last), "
        f"ViT-S/14 {backbones[2]['of_bound']:.0%} | {ok(mobilenet, TARGETS['of_bound'])} (MobileNetV2) |",
        f"| peak memory x10 collection < {TARGETS['memory_growth']}x | "
        + (f"{growth:.2f}x | {ok(growth, TARGETS['memory_growth'], less=True)} |" if mem else "skipped (--quick) | |"),
        "",
        "## Label generation (one core each)",
        "",
        table([{"generator": "published per-tuple loop (benchmarks/reference.py)", "tuples/s": chain["reference_tuples_per_s"],
                "seconds": chain["reference_s"]},
               {"generator": "service chain stage (labels.candidates)", "tuples/s": chain["service_tuples_per_s"],
                "seconds": chain["service_s"]}]),
        "",
        f"{chain['tuples']} tuples of K=4 over the demo's 8 categories; {chain['labels']:,} candidate labels; "
        f"missing {chain['missing']}, extra {chain['extra']}, support differs {chain['support_differs']}, "
        f"values differ {chain['values_differ']}.",
        "",
        "## Feature extraction",
        "",
        table(backbones, {"of_bound": ".0%"}),
        "",
        f"One feature actor end to end (PNG decode, the image and its mirror, PCA mask, float16 cache write): "
        f"{feats['images_per_s']:.2f} images/s = {2 * feats['images_per_s']:.2f} backbone passes/s, "
        f"{actor_share:.0%} of the bare backbone rate (channels-last, batch 8).",
        "",
    ]
    if mem:
        lines += ["## Memory (whole process tree, PSS)", "", table(mem, {"peak_mb": ".0f", "driver_peak_mb": ".0f", "seconds": ".0f"}),
                  "", f"10x the images and categories: peak x{growth:.2f}.", ""]
    lines += [
        "## Scale model: 1M images, DINOv2-B at 840 px, g5.xlarge workers",
        "",
        f"DINOv2-B/14 at 840 px: {scale['dinov2_b_gflops']:.0f} GFLOP per image (counted); assumed A10G at "
        f"40% of 125 bf16 TFLOP/s -> {scale['gpu_images_per_s']:.1f} images/s per GPU with the mirrored twin. "
        f"Chains: pair structure {scale['pair_nn_dino_s'] * 1e3:.0f} ms at 1800 patches x 768-d "
        f"(demo {scale['pair_nn_demo_s'] * 1e3:.1f} ms), {scale['tuple_s'] * 1e3:.0f} ms per tuple per core; "
        f"{scale['tuples']:,} tuples (1000 categories x 2000). Feature cache {scale['cache_tb']:.1f} TB "
        f"(${scale['cache_usd_month']:.0f}/month on S3); the chain stage reads {scale['chain_read_tb']:.1f} TB.",
        "",
        table(scale["rows"], {"wall_h": ".2f", "usd": ".0f"}),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
