"""`python -m benchmarks.exchange [sizes=...] [old=PATH]`: one category of N rendered views
through the label stage, the growth law of every stage.

One category of small views (the 3D collection's chairs at 64 px, `backbone.image_size=32`)
at each size, a subset of the same instances; their features are computed once, before
and outside the timed runs (a run of one tuple over all of them), so each size's run
times tuples, chains, the exchange and the vote, and the commit. Per size and stage:
milliseconds per image; the driver's peak and the largest other process's (PSS); feature
reads of the cache per image (and loads, which the node-local copies serve); bytes that
went through the exchange and files the run registered per image; commit seconds. Then
t = a * N^b per stage, fitted over the sizes.

`old=PATH` runs the same sizes with another labelgen checkout first on the path (e.g. a
git worktree of the commit before the exchange moved onto Ray Data), side by side, as
far as each finishes within `timeout_s`.
"""

import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from labelgen.cli import run_command
from labelgen.config import Location

from .growth import fresh, render, run_counts
from .memory import peak_memory
from .report import replace_section, table

CATEGORY = {"categories": ["chair"], "dev_instances": 1200, "val_instances": 800, "size": 64}  # x 10 views
ARGS = ["backbone.image_size=32"]  # the smallest MobileNetV2 takes (a multiple of 32)
STAGES = ("tuples", "chains", "vote", "commit")
TARGETS = {"exponent": 1.1, "per_image": 1.3, "memory": 1.5, "reads": 10.0}


@dataclass
class ExchangeConf:
    sizes: list[int] = field(default_factory=lambda: [1000, 2000, 4000, 8000, 16000, 20000])  # views of the one
    # category
    workdir: Location = "data/bench/exchange"  # the rendered views, their features and a store per run
    timeout_s: int = 1800  # per run; a run that outlasts it is reported as not finished
    old: str | None = None  # a labelgen checkout to run side by side (its exchange), e.g. a git worktree
    old_sizes: list[int] = field(default_factory=lambda: [1000, 2000, 4000])  # the sizes to run it at
    out: Location | None = None  # a markdown file whose section this replaces (e.g. BENCHMARKS.md); none: print only


default_conf = ExchangeConf


def instances(manifest: str, views: int, root: str) -> str:
    """A manifest of the first views/10 instances (dev and val alike), beside the full one."""
    df = pd.read_parquet(manifest)
    keep = sorted(df["instance"].unique())[: views // 10]
    path = os.path.join(os.path.dirname(manifest), f"manifest-{views}.parquet")
    df[df["instance"].isin(keep)].to_parquet(path, index=False)
    return path


def measure(name: str, manifest: str, root: str, cache: str, timeout_s: float, checkout=None) -> dict | None:
    """One run in a fresh store on the shared cache: per image milliseconds of each stage,
    memory, reads, bytes and files; None when it outlasts timeout_s."""
    store = os.path.join(root, f"store-{name}")
    fresh(store)
    argv = [f"data.manifest={manifest}", f"store={store}", f"features.cache={cache}", "run_id=bench", *ARGS]
    try:
        r = peak_memory(argv, timeout_s, checkout and {"PYTHONPATH": checkout}, checkout)
    except Exception as e:  # subprocess.TimeoutExpired, or a failed run
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    c = run_counts(store, "bench")
    n = c["images"]
    files = sum(len(fs) for _, _, fs in os.walk(os.path.join(store, "runs", "bench")))
    return {
        "images": n,
        "ms": {s: 1e3 * r["stages"].get(s, 0.0) / n for s in STAGES},
        "driver_mb": r["driver_peak_mb"],
        "task_mb": r["task_peak_mb"],
        "reads": c.get("feature_reads", float("nan")) / n,
        "loads": c.get("feature_loads", float("nan")) / n,
        "exchanged_kb": c.get("exchanged_bytes", float("nan")) / n / 1e3,
        "files": files / n,
        "labels": c.get("labels", 0),
        "commit_s": r["stages"].get("commit", 0.0),
    }


def fit(sizes: list[int], values: list[float]) -> float:
    """b of t = a * N^b, least squares in log-log."""
    ok = [(n, v) for n, v in zip(sizes, values) if v > 0]
    if len(ok) < 2:
        return float("nan")
    x, y = np.log([n for n, _ in ok]), np.log([v * n for n, v in ok])  # total seconds, not per image
    return float(np.polyfit(x, y, 1)[0])


def bench_exchange(conf) -> dict:
    root = os.path.abspath(conf.workdir)
    manifest, render_s = render(root, CATEGORY)
    cache = os.path.join(root, "features")
    seed = os.path.join(root, "store-seed")  # every view's features, outside the timed runs
    fresh(seed)
    seed_args = [f"data.manifest={manifest}", f"store={seed}", f"features.cache={cache}", "pairing.max_tuples=1"]
    peak_memory([*seed_args, *ARGS])
    out = {"render_s": render_s, "sizes": list(conf.sizes), "runs": {}}
    sides = {"new": (None, conf.sizes)}
    if conf.old:
        sides["old"] = (os.path.abspath(conf.old), conf.old_sizes)
    for side, (checkout, sizes) in sides.items():
        for n in sizes:
            print(f"exchange: {side}, {n:,} views", flush=True)
            r = measure(f"{side}-{n}", instances(manifest, n, root), root, cache, conf.timeout_s, checkout)
            out["runs"][f"{side}-{n}"] = r
            if "error" in r:
                break  # a larger size will not finish either
    return out


def summarize(result: dict) -> dict:
    """Per side: the exponent b of each stage (and of the whole label stage) over the sizes that finished."""
    fits = {}
    for side in ("new", "old"):
        runs = [(int(k.split("-")[1]), r) for k, r in result["runs"].items() if k.startswith(f"{side}-")]
        runs = [(n, r) for n, r in runs if r and "error" not in r]
        if len(runs) >= 2:
            sizes = [r["images"] for _, r in runs]
            fits[side] = {s: fit(sizes, [r["ms"][s] for _, r in runs]) for s in STAGES}
            fits[side]["chains+vote"] = fit(sizes, [r["ms"]["chains"] + r["ms"]["vote"] for _, r in runs])
    return fits


def markdown(result: dict) -> str:
    rows = []
    for key, r in result["runs"].items():
        side, n = key.split("-")
        if r is None or "error" in r:
            rows.append({"exchange": side, "views": int(n), "note": (r or {}).get("error", "not run")})
            continue
        rows.append(
            {
                "exchange": side,
                "views": r["images"],
                **{f"{s} ms/img": r["ms"][s] for s in STAGES},
                "driver MB": r["driver_mb"],
                "task MB": r["task_mb"],
                "reads/img": r["reads"],
                "loads/img": r["loads"],
                "exchanged KB/img": r["exchanged_kb"],
                "files/img": r["files"],
                "commit s": r["commit_s"],
            }
        )
    fits = summarize(result)
    lines = [
        "## One category at N views: the exchange's growth",
        "",
        table(rows),
        "",
        "Exponent b of t = a * N^b (total seconds of the stage) over the sizes that finished:",
        "",
        table([{"exchange": side, **{k: format(v, ".2f") for k, v in f.items()}} for side, f in fits.items()]),
        "",
    ]
    return "\n".join(lines)


def bench(conf) -> int:
    result = bench_exchange(conf)
    os.makedirs(os.path.abspath(conf.workdir), exist_ok=True)
    with open(os.path.join(os.path.abspath(conf.workdir), "exchange.json"), "w") as f:
        json.dump(result, f, indent=1)
    section = markdown(result)
    print(section)
    if conf.out:
        replace_section(conf.out, section)
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, bench, argv, announce=False)


if __name__ == "__main__":
    sys.exit(main())
