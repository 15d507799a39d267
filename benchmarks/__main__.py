"""`python -m benchmarks [quick=true] [out=BENCHMARKS.md]`: the service side by side with its
yardsticks, in one run on this machine; prints the tables and writes them to `out`.

Every figure that matters is a ratio of two things measured here in the same run
(timings on shared machines are noisy; ratios much less so).
"""

import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import OmegaConf

from labelgen import pipeline
from labelgen.cli import run_command
from labelgen.config import Location
from labelgen.features import FeatureCache, FeatureWorker, worker_batch
from labelgen.manifest import read_manifest

from . import exchange
from .chains import bench_chains
from .current_labels import bench_current_labels, render_current_labels
from .features import bench_backbones, bench_cache, cache_cut_dinov2, matmul_flops
from .growth import bench_growth, render_growth
from .memory import bench_make_run, bench_memory
from .pairing import bench_pairing, render_pairing
from .report import table
from .scale import scale_model

TARGETS = {"chain_speedup": 20.0, "of_bound": 0.6, "memory_growth": 1.5, "actor_share": 0.8}
CHAIN_SIZES = {"full": 60, "quick": 15}  # tuples per demo category
DINO = "DINOv2-B 60x60x768, the 3D collection's foreground"


@dataclass
class BenchConf:
    quick: bool = False  # the chains at the small size only; no memory or make-run runs; scale at 1x and 4x, growth
    # at 1x
    out: Location = "BENCHMARKS.md"  # the report to write
    workdir: Location = "data/bench"  # demo images, features and stores of the runs


default_conf = BenchConf


def machine() -> dict:
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def extract(df, backbone_conf, size, features: FeatureCache, batch=8) -> dict:
    """All demo features through one in-process feature actor (what a Ray actor does), after
    one batch of warm-up (as the bare backbone's rate gets)."""
    worker = FeatureWorker(backbone_conf, size, features, threads=os.cpu_count(), flips=True)
    rows = worker_batch(df)
    worker({k: v[:batch] for k, v in rows.items()})
    t0, fg = time.perf_counter(), []
    for s in range(0, len(df), batch):
        out = worker({k: v[s : s + batch] for k, v in rows.items()})
        fg.extend(out["n_fg"])
    return {
        "images": len(df),
        "images_per_s": len(df) / (time.perf_counter() - t0),
        "mean_fg": float(np.mean(fg)),
        "backbone": worker.backbone,
        "steps_ms": actor_steps(worker, list(zip(*rows.values()))[: 4 * batch]),
    }


@torch.inference_mode()
def actor_steps(worker: FeatureWorker, rows: list[tuple]) -> dict:
    """Milliseconds per image (and its mirror) of each step of the actor, one after the other:
    what has to hide behind the forward pass."""
    t0 = time.perf_counter()
    views = [v for r in rows for v in worker._try_prepare(r)]
    t1 = time.perf_counter()
    feats = torch.cat([worker._forward(views[s : s + 16]) for s in range(0, len(views), 16)])
    t2 = time.perf_counter()
    for v, f in zip(views, feats):
        worker._finish(v, f)
    t3 = time.perf_counter()
    return {
        k: 1e3 * t / len(rows)
        for k, t in (("decode and inputs", t1 - t0), ("forward", t2 - t1), ("cache files", t3 - t2))
    }


STEPS = 10


def step(n: int, what: str):
    print(f"[{n}/{STEPS}] {what}", flush=True)


def bench(conf) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    m = machine()
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']:.0f} GiB; torch {m['torch']}; GPU: "
        f"{m['gpu'] or 'none'}",
        flush=True,
    )
    results = {"machine": m, **bench_features(conf, m)}
    results.update(bench_service(conf, results))
    report = "\n".join(
        [
            render(results),
            render_current_labels(results["current"]),
            render_pairing(results["pairing"]),
            exchange.markdown(results["one_category"]),
        ]
    )
    print(report)
    with open(conf.out, "w") as f:
        f.write(report + "\n")
    print(f"written to {conf.out}")
    return 0


def bench_features(conf, m: dict) -> dict:
    """Steps 1-2: the feature actor against the bare backbone, and the cache's bytes per image."""
    run_conf = pipeline.parse(["data.builtin=demo", f"data.demo.root={conf.workdir}", f"store={conf.workdir}/store"])
    inputs = pipeline.prepare(run_conf)
    df, backbone_conf, size, fingerprint = inputs.df, inputs.backbone, inputs.image_size, inputs.fingerprint
    cache_root = os.path.join(conf.workdir, "features")
    shutil.rmtree(cache_root, ignore_errors=True)  # the actor writes every file
    torch.set_num_threads(m["cores"])
    peak = matmul_flops()
    step(1, f"features: {len(df)} demo images, both flips, one actor on {m['cores']} threads")
    features = FeatureCache(cache_root, fingerprint)
    feats = extract(df, backbone_conf, size, features)
    backbones = bench_backbones(feats["backbone"], size, 8, peak)
    actor_share = 2 * feats["images_per_s"] / backbones[1]["images_per_s"]  # 2 passes per image (flip)

    step(2, "feature cache: bytes per image against the full grid (demo photos, 3D collection, DINOv2-B)")
    objects = read_manifest(pipeline.builtin_collection(pipeline.parse([f"data.objects.root={conf.workdir}"]).data))
    sample = objects.groupby("category").head(8)  # 8 views of each 3D category
    objects_cache = FeatureCache(os.path.join(conf.workdir, "features-objects"), fingerprint)
    shutil.rmtree(objects_cache.root, ignore_errors=True)
    extract(sample, backbone_conf, size, objects_cache)
    cache = {
        "demo photos": bench_cache(features, df["image_id"]),
        "3D collection (masks)": bench_cache(objects_cache, sample["image_id"]),
    }
    cache[DINO] = cache_cut_dinov2(cache["3D collection (masks)"]["fg_fraction"])
    return dict(
        run_conf=run_conf, df=df, features=features, peak=peak, feats=feats, backbones=backbones,
        actor_share=actor_share, cache=cache,
    )  # fmt: skip


def bench_service(conf, r: dict) -> dict:
    """Steps 3-10: chains, memory, a default run, the scale model, growth, current labels,
    pairing and the exchange."""
    workdir, quick = os.path.abspath(conf.workdir), conf.quick
    torch.set_num_threads(1)
    peak_1 = matmul_flops()
    sizes = {k: v for k, v in CHAIN_SIZES.items() if k == "quick" or not quick}
    step(
        3,
        "chains: the published per-tuple loop vs the service's chain stage, one core each, "
        + " and ".join(f"{n} tuples per category" for n in sizes.values()),
    )
    chains = {k: bench_chains(r["df"], r["run_conf"], r["features"], n) for k, n in sizes.items()}
    step(4, "memory: " + ("skipped (quick=true)" if quick else "one category with 1x and 10x the tuples"))
    mem = None if quick else bench_memory(workdir)
    step(5, "make run: " + ("skipped (quick=true)" if quick else "the default run, wall time per stage"))
    make_run = None if quick else bench_make_run(workdir)
    step(6, "scale model")
    collection = r["cache"]["3D collection (masks)"]["fg_fraction"]
    scale = scale_model(
        next(iter(chains.values())), r["feats"]["mean_fg"], 288, collection, cache_fraction=r["cache"][DINO]["fraction"]
    )
    step(
        7,
        "scale and growth: the 3D collection at "
        + ("1x and 4x, growth at 1x" if quick else "1x, 4x and 16x, growth at 4x"),
    )
    growth = bench_growth(workdir, quick)
    print(
        "growth: "
        + "; ".join(f"{t['target']}: {t['measured']} ({'met' if t['met'] else 'NOT met'})" for t in growth["targets"]),
        flush=True,
    )
    step(8, "current labels: commits and queries as the store grows to " + ("1" if quick else "10") + " million labels")
    current = bench_current_labels(workdir, *((4, 250_000) if quick else (10, 1_000_000)))
    step(9, "pairing: one category of " + ("1,000 and 4,000" if quick else "1,000 to 50,000") + " images")
    pairing = bench_pairing(quick)
    step(10, "one category at N views: the exchange's growth")
    views = exchange.default_conf().sizes
    one_category = exchange.bench_exchange(
        OmegaConf.merge(
            exchange.default_conf,
            {"sizes": views[:2] if quick else views, "workdir": os.path.join(workdir, "exchange")},
        )
    )
    return dict(
        peak_1=peak_1, chains=chains, memory=mem, make_run=make_run, scale=scale, growth=growth,
        current=current, pairing=pairing, one_category=one_category,
    )  # fmt: skip


def render(r: dict) -> str:
    """The report up to the scale and growth section, from bench's results `r`, one section
    after the other."""
    sections = (
        head,
        summary,
        label_generation,
        feature_extraction,
        feature_cache,
        vote_memory,
        make_run_stages,
        scale_estimate,
    )
    return "\n".join([*(line for section in sections for line in section(r)), render_growth(r["growth"])])


def verdict(value: float, target: float, less: bool = False) -> str:
    return "met" if (value < target if less else value >= target) else "NOT met"


def head(r: dict) -> list[str]:
    m, peak, peak_1 = r["machine"], r["peak"], r["peak_1"]
    return [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks` (`make bench`); every ratio is measured side by side in one run.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']:.0f} GiB, Python {m['python']}, torch "
        f"{m['torch']}, {m['date']}. Dense float32 matmul: {peak / 1e9:.0f} GFLOP/s on {m['cores']} threads, "
        f"{peak_1 / 1e9:.0f} on one. GPU: "
        + (m["gpu"] or "none (no GPU measurement below; the GPU code paths are covered by the fake-GPU cluster test)")
        + ".",
        "",
    ]


def summary(r: dict) -> list[str]:
    """A row per target: what it asks, what was measured, met or not."""
    growth, make_run, backbones = r["growth"], r["make_run"], r["backbones"]
    return [
        "## Summary",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *[chains_row(name, c) for name, c in r["chains"].items()],
        cuda_row(r["machine"]["gpu"], next(iter(r["chains"].values()))),
        memory_row(r["memory"]),
        cache_row(r["cache"]),
        actor_row(r),
        f"| features >= {TARGETS['of_bound']:.0%} of the FLOP bound | MobileNetV2 {backbones[1]['of_bound']:.0%} "
        f"(channels-last), ViT-S/14 {backbones[2]['of_bound']:.0%} | "
        f"{verdict(backbones[1]['of_bound'], TARGETS['of_bound'])} (MobileNetV2) |",
        "| `make run` wall time by stage | "
        + (
            f"{make_run['stages']['total']:.0f} s in all; the table below | |"
            if make_run
            else "skipped (quick=true) | |"
        ),
        f"| scale ({', '.join(growth['sizes'])}) and growth | {sum(t['met'] for t in growth['targets'])} of "
        f"{len(growth['targets'])} targets met; the section below | |",
        "",
    ]


def chains_row(name: str, c: dict) -> str:
    matmuls = c["adjacent_s"] + c["other_s"]
    return (
        f"| chain stage >= {TARGETS['chain_speedup']:.0f}x the per-tuple reference per core, same labels ({name}, "
        f"{c['tuples']} tuples) | {c['speedup']:.1f}x, labels identical: {c['identical']}. The pair matmuls alone "
        f"take {matmuls:.2f} s of the service's {c['service_s']:.2f} s: at most {c['reference_s'] / matmuls:.0f}x "
        f"with nothing else | {verdict(c['speedup'], TARGETS['chain_speedup'])} |"
    )


def cuda_row(gpu: str | None, c: dict) -> str:
    if not gpu:
        return "| chain stage on CUDA | no GPU on this machine | not measured |"
    return (
        f"| chain stage on CUDA | {c['cuda_tuples_per_s']:.0f} tuples/s on {gpu}, labels identical: "
        f"{c['cuda_identical']} | |"
    )


def memory_row(mem: dict | None) -> str:
    target = f"| vote: peak memory of one category with 10x the tuples < {TARGETS['memory_growth']}x, same labels | "
    if not mem:
        return target + "skipped (quick=true) | |"
    return (
        f"{target}x{mem['growth']:.2f} (the vote in one task: x{mem['growth_one_task']:.2f}), labels the same: "
        f"{mem['same_labels']} | {verdict(mem['growth'], TARGETS['memory_growth'], less=True)} |"
    )


def cache_row(cache: dict) -> str:
    dino = cache[DINO]
    return (
        f"| feature cache: bytes per image and the chains' reads cut | DINOv2-B shaped {dino['fraction']:.0%} of the "
        f"full grid ({dino['bytes'] / 1e6:.2f} of {dino['full_bytes'] / 1e6:.2f} MB); 3D collection "
        f"{cache['3D collection (masks)']['fraction']:.0%}; demo photos {cache['demo photos']['fraction']:.0%} | "
        f"{verdict(1 - dino['fraction'], 1e-9)} |"
    )


def actor_row(r: dict) -> str:
    steps, share = r["feats"]["steps_ms"], r["actor_share"]
    return (
        f"| feature actor end to end >= {TARGETS['actor_share']:.0%} of the bare backbone | {share:.0%}; "
        f"decode and cache files {steps['decode and inputs'] + steps['cache files']:.1f} ms per image beside a "
        f"{steps['forward']:.1f} ms forward, on the same {r['machine']['cores']} cores | "
        f"{verdict(share, TARGETS['actor_share'])} |"
    )


def label_generation(r: dict) -> list[str]:
    chains = r["chains"]
    generators = (
        ("published per-tuple loop (benchmarks/reference.py)", "reference"),
        ("service chain stage (labels.candidates)", "service"),
    )
    rows = [
        {"size": name, "generator": gen, "tuples/s": c[f"{key}_tuples_per_s"], "seconds": c[f"{key}_s"]}
        for name, c in chains.items()
        for gen, key in generators
    ]
    return [
        "## Label generation (one core each)",
        "",
        table(rows),
        "",
        *[
            f"{name}: {c['tuples']} tuples of K=4 over the demo's 8 categories; {c['labels']:,} candidate labels; "
            f"missing {c['missing']}, extra {c['extra']}, support differs {c['support_differs']}, values differ "
            f"{c['values_differ']}. The service's similarity matmuls: {c['adjacent_pairs']} adjacent image pairs (the "
            f"chains) {c['adjacent_s']:.2f} s, {c['other_pairs']} other pairs (the pair check's direct matches) "
            f"{c['other_s']:.2f} s; the reference computes one per hop ({3 * c['tuples']}).\n"
            for name, c in chains.items()
        ],
    ]


def feature_extraction(r: dict) -> list[str]:
    feats, share = r["feats"], r["actor_share"]
    return [
        "## Feature extraction",
        "",
        table(r["backbones"], {"of_bound": ".0%"}),
        "",
        "One feature actor end to end (PNG decode, the image and its mirror, foreground, cache write): "
        f"{feats['images_per_s']:.2f} images/s = {2 * feats['images_per_s']:.2f} backbone passes/s, "
        f"{share:.0%} of the bare backbone rate (channels-last, batch 8). Its steps one after the other, ms "
        f"per image and mirror: {', '.join(f'{k} {v:.1f}' for k, v in feats['steps_ms'].items())}; on "
        f"{r['machine']['cores']} cores the forward keeps every core busy, so the other steps cannot hide behind it "
        "(on a GPU they run on the CPU beside it).",
        "",
    ]


def feature_cache(r: dict) -> list[str]:
    rows = [
        {
            "collection": name,
            "grid": "x".join(map(str, c["grid"])) + f"x{c['dim']}",
            "foreground": c["fg_fraction"],
            "stored_cells": c["stored_fraction"],
            "bytes_per_view": float(c["bytes"]),
            "full_grid_bytes": float(c["full_bytes"]),
            "of_full": c["fraction"],
        }
        for name, c in r["cache"].items()
    ]
    shares, sizes = dict.fromkeys(("foreground", "stored_cells", "of_full"), ".0%"), ",.0f"
    return [
        "## Feature cache",
        "",
        table(rows, {**shares, "bytes_per_view": sizes, "full_grid_bytes": sizes}),
        "",
        "A file holds the foreground cells and a ring of context cells around them (the adapter's 3x3 convolution "
        "reads it) in float16; the chain stage reads the files whole, so its read volume falls by the same factor.",
        "",
    ]


def vote_memory(r: dict) -> list[str]:
    mem = r["memory"]
    if not mem:
        return []
    return [
        "## Memory of one category's run (whole process tree, PSS)",
        "",
        table(mem["rows"], {"peak_mb": ".0f", "driver_peak_mb": ".0f", "seconds": ".0f"}),
        "",
        f"The demo's chelsea photo in 50 views, features cached; 10x the tuples: peak x{mem['growth']:.2f} with "
        f"the vote partitioned by source image, x{mem['growth_one_task']:.2f} with the category's vote in one "
        f"task; the labels of both are the same: {mem['same_labels']}.",
        "",
    ]


def make_run_stages(r: dict) -> list[str]:
    stages = r["make_run"] and r["make_run"]["stages"]
    if not stages:
        return []
    return [
        "## `make run` by stage",
        "",
        table(
            [{"stage": k, "seconds": v, "share": v / stages["total"]} for k, v in stages.items()],
            {"seconds": ".1f", "share": ".0%"},
        ),
        "",
        "The default run (the built-in 3D collection, rendered anew, in a fresh store); peak memory "
        f"{r['make_run']['peak_mb']:.0f} MB.",
        "",
    ]


def scale_estimate(r: dict) -> list[str]:
    s = r["scale"]
    return [
        "## Scale model: 1M images, DINOv2-B at 840 px, g5.xlarge workers",
        "",
        f"DINOv2-B/14 at 840 px: {s['dinov2_b_gflops']:.0f} GFLOP per image (counted); assumed A10G at 40% of "
        f"125 bf16 TFLOP/s -> {s['gpu_images_per_s']:.1f} images/s per GPU with the mirrored twin. Chains: an "
        f"image pair's nearest neighbours {s['pair_dino_s'] * 1e3:.0f} ms at {s['fg_patches']} foreground "
        f"patches x 768-d (the 3D collection's share of the grid; demo {s['pair_demo_s'] * 1e3:.1f} ms), "
        f"{s['pairs_per_tuple']:.2f} distinct pairs per tuple (the demo's), {s['tuple_s'] * 1e3:.0f} ms per "
        f"tuple per core; {s['tuples']:,} tuples (1000 categories x 2000). Feature cache {s['cache_tb']:.1f} "
        f"TB (${s['cache_usd_month']:.0f}/month on S3; full grids {s['cache_tb_full']:.1f} TB, "
        f"${s['cache_usd_month_full']:.0f}); the chain stage reads {s['chain_read_tb']:.1f} TB (full grids "
        f"{s['chain_read_tb_full']:.1f} TB).",
        "",
        table(s["rows"], {"wall_h": ".2f", "usd": ".0f"}),
        "",
    ]


def main(argv=None) -> int:
    return run_command(default_conf, bench, argv, announce=False)


if __name__ == "__main__":
    sys.exit(main())
