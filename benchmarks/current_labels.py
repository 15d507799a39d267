"""What counting every label once costs as a store grows to 10 million labels: the commit
of a run (registering its files; nothing is deleted, superseded labels stay in
label_history) and a query over the current labels (the view `labels`: per image pair,
the latest run that examined it), each beside the same over label_history.

Runs are written through the store's own calls, as a label run's tasks write them: every
run labels 50 points on each of its image pairs, half of them pairs the run before
labelled (a relabel), half new ones.
"""

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from labelgen.cli import run_command
from labelgen.config import Location
from labelgen.console import Progress
from labelgen.store import LABEL_SCHEMA, LabelStore, images_table

from .report import table

POINTS = 50  # labels per image pair


def run_labels(run_id: str, pairs: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """POINTS labels on each (src, tgt) image number pair, distinct source points."""
    n = len(pairs) * POINTS
    src = np.repeat(pairs[:, 0], POINTS).astype(str)
    tgt = np.repeat(pairs[:, 1], POINTS).astype(str)
    xy = np.tile(np.arange(POINTS, dtype=np.float32), len(pairs))
    cols = {
        "run_id": [run_id] * n,
        "category": ["cat"] * n,
        "src_image_id": src,
        "tgt_image_id": tgt,
        "src_x": xy,
        "src_y": np.zeros(n, np.float32),
        "tgt_x": rng.random(n, np.float32),
        "tgt_y": rng.random(n, np.float32),
        "hops": np.ones(n, np.int32),
        "cycle_error": rng.random(n, np.float32),
        "similarity": rng.random(n, np.float32),
        "support": np.ones(n, np.int32),
        "confidence": rng.random(n, np.float32),
    }
    return pa.table(
        {f.name: pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type) for f in LABEL_SCHEMA}
    )


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_current_labels(root: str, runs: int = 10, labels_per_run: int = 1_000_000, parts: int = 8) -> dict:
    """Commit `runs` runs of `labels_per_run` labels (in `parts` files each) into a fresh store;
    per commit its seconds, then the query seconds of current labels against the history."""
    path = os.path.join(root, "store-current")
    shutil.rmtree(path, ignore_errors=True)
    store, rng = LabelStore(path), np.random.default_rng(0)
    n_pairs = labels_per_run // POINTS
    rows, previous, next_id = [], np.zeros((0, 2), np.int64), 0
    progress = Progress(runs, "commits", "runs")
    for r in range(runs):
        run_id = f"r{r:02d}"
        fresh = np.arange(next_id, next_id + n_pairs - len(previous) // 2)
        next_id += len(fresh)
        pairs = np.concatenate([previous[: len(previous) // 2], np.stack([fresh, fresh + 1], axis=1)])
        store.begin_run({"run_id": run_id, "backbone_fingerprint": "fp", "config": "k: 1", "config_hash": "h"})
        table = run_labels(run_id, pairs, rng)
        step = -(-table.num_rows // parts)
        for p in range(parts):
            store.files(run_id).write_part(
                "cat", p, table.slice(p * step, step), {"labels": min(step, table.num_rows - p * step)}
            )
        ids = np.unique(pairs).astype(str)
        store.files(run_id).write_images(
            "cat",
            images_table(
                pa.table({"image_id": ids, "category": ["cat"] * len(ids), "run_id": [run_id] * len(ids)}).to_pandas()
            ),
            {},
            parts,
        )
        _, commit_s = timed(lambda: store.commit(run_id, {"labels": table.num_rows}, []))
        rows.append({"run": run_id, "history": (r + 1) * labels_per_run, "commit_s": commit_s})
        previous = pairs
        progress.update(1)
    progress.close()
    con = store.connect()
    try:
        (current,), current_s = timed(lambda: con.execute("SELECT count(*) FROM labels").fetchone())
        (history,), history_s = timed(lambda: con.execute("SELECT count(*) FROM label_history").fetchone())
        (distinct,), _ = timed(
            lambda: con.execute(
                "SELECT count(*) FROM (SELECT DISTINCT src_image_id, tgt_image_id, src_x, src_y FROM labels)"
            ).fetchone()
        )
        (by_category,), category_s = timed(
            lambda: con.execute(
                "SELECT count(*) FROM (SELECT category, count(*) FROM labels GROUP BY category)"
            ).fetchone()
        )
    finally:
        con.close()
    catalog = os.path.getsize(os.path.join(path, "catalog.sqlite"))
    return {
        "rows": rows,
        "history": history,
        "current": current,
        "distinct": distinct,
        "current_count_s": current_s,
        "history_count_s": history_s,
        "current_group_s": category_s,
        "catalog_mb": catalog / 2**20,
        "first_commit_s": rows[0]["commit_s"],
        "last_commit_s": rows[-1]["commit_s"],
    }


def render_current_labels(r: dict) -> str:
    first = r["rows"][0]["history"]
    return "\n".join(
        [
            f"## Current labels at {r['history']:,} stored",
            "",
            f"{len(r['rows'])} runs of {first:,} labels (50 per image pair, half of each run's pairs "
            "relabelled from the run before) committed one after the other into one store; "
            f"{r['history']:,} in label_history, {r['current']:,} current (count(*) = distinct (pair, source point): "
            f"{r['current'] == r['distinct']}).",
            "",
            table(
                [
                    {"committed labels before": f"{row['history'] - first:,}", "commit s": row["commit_s"]}
                    for row in r["rows"]
                ],
                {"commit s": ".2f"},
            ),
            "",
            f"- `SELECT count(*) FROM labels` (current): {r['current_count_s']:.2f} s; the same over label_history: "
            f"{r['history_count_s']:.2f} s; current labels grouped by category: {r['current_group_s']:.2f} s.",
            f"- Catalog: {r['catalog_mb']:.1f} MB.",
            "",
        ]
    )


@dataclass
class CurrentLabelsConf:
    workdir: Location | None = None  # where the store is made (store-current/, replaced); default: a new temporary
    # folder
    runs: int = 10  # runs committed one after the other
    labels_per_run: int = 1_000_000  # labels of each run
    parts: int = 8  # files per run, as vote partitions write them


default_conf = CurrentLabelsConf


def bench(conf) -> int:
    out = bench_current_labels(conf.workdir or tempfile.mkdtemp(), conf.runs, conf.labels_per_run, conf.parts)
    print(render_current_labels(out))
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, bench, argv, announce=False)


if __name__ == "__main__":
    sys.exit(main())
