"""Scale and growth: what a label run costs per image as the collection grows, and what
labelling a grown collection costs against labelling it anew.

The built-in 3D collection at 1x (7 instances x 10 views x 6 categories = 420 views),
4x and 16x (more instances per category, the same views); one category of up to 20,000
views is benchmarks.exchange. Every collection is rendered once, before and outside the timed runs
(`data.manifest=` then points at it), so the runs time the pipeline, not the renderer.
Each size's full run is in a fresh store with a fresh feature cache: its features stage
is real. A run is `benchmarks.memory.peak_memory` (the process tree's peak PSS, the
driver's, the summary's time line).

Growth: ~90% of the instances of each category into a fresh store, then the full
manifest into the same store (the grown run: only the new images need tuples), then the
same command again (the repeated run: nothing new, 0 labels added).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelgen.cli import run_command
from labelgen.config import Location
from labelgen.features import FLIPPED, FeatureCache
from labelgen.store import LabelStore
from labelgen.synthetic import build_collection

from .memory import peak_memory
from .report import table

SCALES = {"1x": 1, "4x": 4, "16x": 16}  # x the default's instances per category (4 dev, 3 val)
QUICK_SCALES = ("1x", "4x")
RUN_TIMEOUT_S = 3600  # a run (16x may take ~20 min here)
GROWN_SHARE = 0.9  # of each category's instances in the first growth run
TARGETS = {"stage_growth": 1.3, "labels_drift": 0.25, "coverage": 0.95, "driver_growth": 1.5, "grown": 0.2}
TIME_STEP_S = 0.05  # half the time line's rounding (0.1 s): the least a stage of "0.0 s" may have taken


def render(root: str, conf: dict) -> tuple[str, float]:
    """The collection's manifest, rendered now unless it is there; and the seconds that took
    (outside any timed run)."""
    t0 = time.perf_counter()
    manifest = build_collection({"root": os.path.join(root, "objects"), **conf})
    return manifest, time.perf_counter() - t0


def subset(manifest: str, keep: float, name: str, seed: int = 0) -> str:
    """A manifest of `keep` of each category's instances (at least one left out), drawn at
    random, written beside the full one so that its relative URIs still resolve."""
    df, rng = pd.read_parquet(manifest), np.random.default_rng(seed)
    kept = []
    for _, rows in df.groupby("category", sort=True):
        instances = sorted(rows["instance"].unique())
        n = min(len(instances) - 1, max(1, round(keep * len(instances))))
        kept += list(rng.choice(instances, n, replace=False))
    path = os.path.join(os.path.dirname(manifest), f"{name}.parquet")
    df[df["instance"].isin(kept)].to_parquet(path, index=False)
    return path


def fresh(*paths: str):
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def timed_run(argv: list[str], timeout_s: float = RUN_TIMEOUT_S) -> dict | None:
    """peak_memory(argv); None when the run outlasts timeout_s (its process tree ended)."""
    try:
        return peak_memory(argv, timeout_s)
    except subprocess.TimeoutExpired:
        return None


def run_counts(store: str, run_id: str) -> dict:
    con = LabelStore(store).connect()
    try:
        row = con.execute("SELECT counts FROM runs WHERE run_id = ?", [run_id]).fetchone()
    finally:
        con.close()
    return json.loads(row[0]) if row and row[0] else {}


def label_counts(store: str) -> dict:
    """count(*) of the store's current labels and of their distinct (source image, target
    image, source point), equal when each label is counted once; and of label_history."""
    if not os.path.exists(os.path.join(store, "catalog.sqlite")):
        return {"labels": 0, "distinct": 0, "history": 0}
    con = LabelStore(store).connect()
    try:
        one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "labels": one("SELECT count(*) FROM labels"),
            "history": one("SELECT count(*) FROM label_history"),
            "distinct": one(
                "SELECT count(*) FROM (SELECT DISTINCT src_image_id, tgt_image_id, src_x, src_y FROM labels)"
            ),
        }
    finally:
        con.close()


def measure(name: str, manifest: str, root: str, extra=(), timeout_s: float = RUN_TIMEOUT_S) -> dict | None:
    """One full run of `manifest` in a fresh store with a fresh feature cache (kept, for the
    growth runs to share): per image seconds of each stage, labels and tuples; memory,
    coverage, commit seconds and the catalog's bytes. None when it outlasts timeout_s."""
    store, cache = os.path.join(root, f"store-{name}"), os.path.join(root, f"features-{name}")
    fresh(store, cache)
    r = timed_run(
        [f"data.manifest={manifest}", f"store={store}", f"features.cache={cache}", f"run_id=full-{name}", *extra],
        timeout_s,
    )
    if r is None:
        return None
    counts = run_counts(store, f"full-{name}")
    n = counts.get("images") or len(pd.read_parquet(manifest))
    return {
        "size": name,
        "images": n,
        "stages": r["stages"],
        "per_image": {k: v / n for k, v in r["stages"].items()},
        "peak_mb": r["peak_mb"],
        "driver_peak_mb": r["driver_peak_mb"],
        "coverage": counts.get("coverage"),
        "labels_per_image": counts.get("labels", 0) / n,
        "tuples_per_image": counts.get("tuples", 0) / n,
        "commit_s": r["stages"].get("commit"),
        "catalog_bytes": os.path.getsize(os.path.join(store, "catalog.sqlite")),
        "manifest": manifest,
        "cache": cache,
    }


def seed_cache(shared: str, cache: str, manifest: str) -> int:
    """Hard-link the shared cache's files of the manifest's images (and their mirrors) into
    `cache`: the first growth run reads features the full run computed, while the grown run
    still computes its new images' own. Returns the files linked."""
    linked = 0
    for fingerprint in os.listdir(shared):
        for image_id in pd.read_parquet(manifest, columns=["image_id"])["image_id"]:
            for i in (image_id, image_id + FLIPPED):
                src, dst = FeatureCache(shared, fingerprint).uri(i), FeatureCache(cache, fingerprint).uri(i)
                if os.path.exists(src):
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    os.link(src, dst)
                    linked += 1
    return linked


def bench_increment(full: dict, root: str) -> dict:
    """~90% of the instances into a fresh store, then the full manifest, then the same again:
    each run's seconds against the full run's (total and per stage) and the labels it added;
    finally whether the store counts each label once."""
    store, cache = (
        os.path.join(root, f"store-grown-{full['size']}"),
        os.path.join(root, f"features-grown-{full['size']}"),
    )
    fresh(store, cache)
    part = subset(full["manifest"], GROWN_SHARE, "manifest-90")
    seed_cache(full["cache"], cache, part)
    rows = []
    for run, manifest in (
        ("90% of the instances", part),
        ("grown: the full manifest", full["manifest"]),
        ("repeated", full["manifest"]),
    ):
        run_id, before = f"growth-{len(rows)}", label_counts(store)
        r = timed_run([f"data.manifest={manifest}", f"store={store}", f"features.cache={cache}", f"run_id={run_id}"])
        after, counts = label_counts(store), run_counts(store, run_id)
        rows.append(
            {
                "run": run,
                "images": counts.get("images"),
                "seconds": r["stages"]["total"],
                "of_full": r["stages"]["total"] / full["stages"]["total"],
                "stage_ratio": {k: v / max(full["stages"].get(k, 0), TIME_STEP_S) for k, v in r["stages"].items()},
                "labels_added": after["labels"] - before["labels"],
                "stored": counts.get("labels", 0),
                "history_added": after["history"] - before["history"],
                "features_computed": counts.get("features_computed"),
                "nothing_new": counts.get("nothing_new"),
            }
        )
    final = label_counts(store)
    return {
        "size": full["size"],
        "rows": rows,
        "labels": final["labels"],
        "distinct": final["distinct"],
        "counted_once": final["labels"] == final["distinct"],
    }


def bench_growth(root: str, quick: bool) -> dict:
    """Full runs at each size (1x, 4x and, unless quick, 16x); the growth runs at 1x (quick)
    or 4x; the targets. One category of up to 20,000 views: benchmarks.exchange."""
    root = os.path.join(root, "growth")
    sizes = {}
    for name in QUICK_SCALES if quick else SCALES:
        manifest, render_s = render(root, {"dev_instances": 4 * SCALES[name], "val_instances": 3 * SCALES[name]})
        sizes[name] = {**measure(name, manifest, root), "render_s": render_s}
    growth = bench_increment(sizes["1x" if quick else "4x"], root)
    return {"sizes": sizes, "growth": growth, "targets": targets(sizes, growth), "quick": quick}


def against_1x(size: dict, first: dict, stage: str) -> float:
    """A stage's seconds per image against 1x's; a stage of "0.0 s" at 1x counts as TIME_STEP_S."""
    return size["per_image"].get(stage, float("nan")) / max(
        first["per_image"].get(stage, 0), TIME_STEP_S / first["images"]
    )


def targets(sizes: dict, growth: dict) -> list[dict]:
    """Each target: what it asks, what was measured, met or not (timings are never asserted)."""
    first, last = sizes["1x"], sizes[list(sizes)[-1]]
    name = last["size"]
    stage = {k: against_1x(last, first, k) for k in last["per_image"]}
    worst = max(stage, key=stage.get)
    drift = last["labels_per_image"] / first["labels_per_image"] - 1 if first["labels_per_image"] else float("inf")
    coverage = [s["coverage"] for s in sizes.values()]
    driver = last["driver_peak_mb"] / first["driver_peak_mb"]
    grown, repeated = growth["rows"][1], growth["rows"][2]
    return [
        {
            "target": f"seconds per image of every stage at {name} <= {TARGETS['stage_growth']}x 1x",
            "measured": f"worst {worst} x{stage[worst]:.2f}",
            "met": stage[worst] <= TARGETS["stage_growth"],
        },
        {
            "target": f"labels per image at {name} within {TARGETS['labels_drift']:.0%} of 1x",
            "measured": f"{last['labels_per_image']:.0f} vs {first['labels_per_image']:.0f} ({drift:+.0%})",
            "met": abs(drift) <= TARGETS["labels_drift"],
        },
        {
            "target": f"coverage >= {TARGETS['coverage']} at every size",
            "measured": ", ".join(
                f"{s['size']} {'n/a' if c is None else format(c, '.3f')}" for s, c in zip(sizes.values(), coverage)
            ),
            "met": all(c is not None and c >= TARGETS["coverage"] for c in coverage),
        },
        {
            "target": f"driver peak at {name} <= {TARGETS['driver_growth']}x 1x",
            "measured": f"x{driver:.2f} ({last['driver_peak_mb']:.0f} vs {first['driver_peak_mb']:.0f} MB)",
            "met": driver <= TARGETS["driver_growth"],
        },
        {
            "target": f"grown run ({growth['size']}) <= {TARGETS['grown']} of a full run",
            "measured": f"{grown['of_full']:.2f} ({grown['seconds']:.0f} s)",
            "met": grown["of_full"] <= TARGETS["grown"],
        },
        {
            "target": "repeated run adds 0 labels",
            "measured": f"{repeated['labels_added']:+,}",
            "met": repeated["labels_added"] == 0,
        },
        {
            "target": "labels: count(*) = count of distinct (src image, tgt image, src x, src y)",
            "measured": f"{growth['labels']:,} vs {growth['distinct']:,}",
            "met": growth["counted_once"],
        },
    ]


def render_growth(result: dict) -> str:
    """The markdown section: the targets, each size's figures, seconds per image by stage, the growth runs."""
    sizes, growth = list(result["sizes"].values()), result["growth"]
    targets = [
        {"target": t["target"], "measured": t["measured"], "": "met" if t["met"] else "NOT met"}
        for t in result["targets"]
    ]
    return "\n".join(
        [
            "## Scale and growth (the built-in 3D collection)",
            "",
            table(targets),
            "",
            sizes_table(sizes),
            "",
            "Milliseconds per image by stage, and against 1x:",
            "",
            stages_table(sizes),
            "",
            f"Growth at {growth['size']}: ~{GROWN_SHARE:.0%} of each category's instances into a fresh store "
            "(features from the full run's cache), then the full manifest into the same store (its new images' "
            "features computed), then the same command again; seconds against the full run at the same size:",
            "",
            growth_table(growth["rows"]),
            "",
            f"After the repeated run the store's labels count {growth['labels']:,}, their distinct (source image, "
            f"target image, source point) {growth['distinct']:,}.",
            "",
        ]
    )


def sizes_table(sizes: list[dict]) -> str:
    rows = [
        {
            "size": s["size"],
            "images": s["images"],
            "tuples/image": s["tuples_per_image"],
            "labels/image": s["labels_per_image"],
            "coverage": "n/a" if s["coverage"] is None else format(s["coverage"], ".3f"),
            "peak MB": s["peak_mb"],
            "driver MB": s["driver_peak_mb"],
            "commit s": s["commit_s"],
            "catalog MB": s["catalog_bytes"] / 2**20,
            "total s": s["stages"]["total"],
            "render s (untimed)": s["render_s"],
        }
        for s in sizes
    ]
    whole = dict.fromkeys(("peak MB", "driver MB", "total s", "render s (untimed)", "labels/image"), ".0f")
    return table(rows, {**whole, "tuples/image": ".1f", "catalog MB": ".2f", "commit s": ".1f"})


def stages_table(sizes: list[dict]) -> str:
    """Milliseconds per image of each stage at each size, and each size's against 1x's."""
    first = sizes[0]
    stages = list(dict.fromkeys(k for s in sizes for k in s["per_image"]))
    return table(
        [
            {
                "stage": k,
                **{s["size"]: 1e3 * s["per_image"].get(k, float("nan")) for s in sizes},
                **{f"{s['size']} / 1x": against_1x(s, first, k) for s in sizes[1:]},
            }
            for k in stages
        ]
    )


def growth_table(runs: list[dict]) -> str:
    rows = [
        {
            "run": r["run"],
            "images": r["images"],
            "features computed": r["features_computed"],
            "labels added": r["labels_added"],
            "label_history added": r["history_added"],
            "run stored": r["stored"],
            "seconds": r["seconds"],
            "of full": r["of_full"],
            "by stage (of full)": ", ".join(f"{k} {v:.2f}" for k, v in r["stage_ratio"].items() if k != "total"),
            "nothing new": r["nothing_new"] or "",
        }
        for r in runs
    ]
    return table(rows, {"seconds": ".0f", "of full": ".2f"})


@dataclass
class GrowthConf:
    workdir: Location = "data/bench"  # collections, feature caches and stores of the runs (under growth/)
    quick: bool = False  # sizes 1x and 4x, growth at 1x; else 1x, 4x, 16x and growth at 4x


default_conf = GrowthConf


def bench(conf) -> int:
    print(render_growth(bench_growth(conf.workdir, conf.quick)))
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, bench, argv, announce=False)


if __name__ == "__main__":
    sys.exit(main())
