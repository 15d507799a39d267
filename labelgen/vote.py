"""The reduce side of a label run: the vote over a partition's candidates, then the checks.

Candidates of a category are summed and, per source patch of an image pair, the target
proposed by most tuples wins; then the pair itself must agree (co-visibility: a point the
target does not show has no direct match back), and each source image keeps its most
confident labels, a fixed share of its patches (a rank, so it holds on an adapter's features).
The vote is a function of each source image's candidates, so a category's vote runs in
partitions by source image (`partition_of`) with the same result. This module imports no
torch: the vote's workers start in a second.
"""

import json
import math
import time
import zlib

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .store.files import RunFiles
from .store.schema import LABEL_SCHEMA


def vote_parts(tuples: int, conf) -> int:
    """How many partitions a category's vote runs in."""
    return max(1, math.ceil(tuples / conf.vote_tuples))


def partition_of(src_image_id, parts: int) -> np.ndarray:
    """Each candidate's vote partition, a stable hash of its source image: every chunk's
    candidates of a source patch meet in one vote."""
    if parts == 1:
        return np.zeros(len(src_image_id), dtype=np.int32)
    ids = pc.dictionary_encode(src_image_id).combine_chunks()
    of_id = np.array([zlib.crc32(i.encode()) % parts for i in ids.dictionary.to_pylist()], dtype=np.int32)
    return of_id[ids.indices.to_numpy(zero_copy_only=False)]


def vote(tables: list[pa.Table], conf) -> pa.Table:
    """Sum the support of identical candidates across chunks, then keep per source patch
    and image pair the best-supported target (ties: higher similarity, then position)."""
    cands = pa.concat_tables(tables) if tables else LABEL_SCHEMA.empty_table()
    con = duckdb.connect()
    con.register("cands", cands)
    pick = (
        "QUALIFY row_number() OVER (PARTITION BY src_image_id, tgt_image_id, src_x, src_y "
        "ORDER BY support DESC, similarity DESC, tgt_y, tgt_x) = 1"
        if conf.vote
        else ""
    )
    out = con.sql(
        f"""
        WITH summed AS (
            SELECT run_id, category, src_image_id, tgt_image_id, src_x, src_y, tgt_x, tgt_y,
                   min(hops) AS hops, min(cycle_error) AS cycle_error, max(similarity) AS similarity,
                   any_value(sphere_angle) AS sphere_angle, sum(support)::INTEGER AS support,
                   min(pair_error) AS pair_error, any_value(pose_gap) AS pose_gap, any_value(confidence) AS confidence
            FROM cands GROUP BY ALL
        )
        SELECT * FROM summed WHERE support >= $min_support {pick}
        ORDER BY src_image_id, tgt_image_id, src_y, src_x, tgt_y, tgt_x
        """,
        params={"min_support": conf.min_support},
    ).to_arrow_table()
    con.close()
    return out.cast(LABEL_SCHEMA)


def pair_check(table: pa.Table, radius: float | None) -> pa.Table:
    """Keep the labels whose pair agrees (co-visibility): the target's direct nearest
    neighbour back in the source lies within `radius` patches. After the vote, so a
    label the tuples agree on is not replaced by a runner-up that happens to pass."""
    if radius is None:
        return table
    return table.filter(pc.less_equal(table["pair_error"], radius))


# a label's signals (its columns) -> whether a lower value speaks for the label
SIGNALS = {
    "support": False,
    "similarity": False,
    "cycle_error": True,
    "pair_error": True,
    "hops": True,
    "pose_gap": True,
    "confidence": False,
    "sphere_angle": True,
}
# the confidence model's inputs: signals the chains measure, support as its logarithm
CONFIDENCE_INPUTS = ("log_support", "similarity", "cycle_error", "pair_error", "hops", "pose_gap")


def signal_frame(labels) -> pd.DataFrame:
    """The confidence model's inputs of label rows (a table or a frame with the label columns)."""
    cols = ["support", *CONFIDENCE_INPUTS[1:]]
    df = labels.select(cols).to_pandas() if isinstance(labels, pa.Table) else labels[cols]
    x = df[list(CONFIDENCE_INPUTS[1:])].astype(np.float64).fillna(0.0)  # no pose: gap 0
    return x.assign(log_support=np.log(np.maximum(df["support"].to_numpy(np.float64), 1.0)))[list(CONFIDENCE_INPUTS)]


def confidence(labels, weights) -> np.ndarray:
    """P(correct) of each label: a logistic model of its signals (labels.confidence)."""
    x = signal_frame(labels).to_numpy()
    logit = weights["bias"] + x @ np.array([weights[k] for k in CONFIDENCE_INPUTS])
    return 1.0 / (1.0 + np.exp(-logit))


def confidence_filter(table: pa.Table, conf, n_fg: dict[str, int], pairs: pa.Table) -> pa.Table:
    """Fill the confidence column and keep, per source image, its most confident labels: at
    most labels.keep per foreground patch of each image pair examined from it (`n_fg`: image
    -> patches, `pairs`: the examined pairs' source ids). A rank, not an absolute confidence,
    so the kept share stays put when an adapter's features shift every similarity, and per
    source image, so images the adapter trained on do not crowd out the others (ties: table
    order)."""
    p = confidence(table, conf.confidence)
    table = table.set_column(table.schema.get_field_index("confidence"), "confidence", pa.array(p, pa.float32()))
    if conf.keep is None or not table.num_rows:
        return table
    examined = pd.Series(pairs["src_image_id"].to_pylist()).value_counts()
    budget = {i: round(conf.keep * n_fg[i] * n) for i, n in examined.items()}
    src = pc.dictionary_encode(table["src_image_id"]).combine_chunks()
    group = src.indices.to_numpy(zero_copy_only=False)
    order = np.lexsort((-p, group))  # by source image, most confident first (stable: ties in table order)
    first = np.searchsorted(group[order], np.arange(len(src.dictionary)))
    rank = np.empty(len(p), dtype=np.int64)
    rank[order] = np.arange(len(p)) - first[group[order]]
    allowed = np.array([budget[i] for i in src.dictionary.to_pylist()])
    return table.filter(pa.array(rank < allowed[group]))


def vote_group(group: pa.Table, files: RunFiles, conf, sphere, copy_key) -> pa.Table:
    """Reduce one vote partition of a category (`group`: its candidates, with their source's
    foreground patches): vote, keep the labels whose pair agrees and the most confident of
    them, filter on the sphere if asked; write them with the counts and the pairs examined.
    Returns (category, part, its counts)."""
    category, part = group["category"][0].as_py(), int(group["part"][0].as_py())
    sources = group.select(["src_image_id", "src_n_fg"]).group_by("src_image_id").aggregate([("src_n_fg", "max")])
    n_fg = dict(zip(sources["src_image_id"].to_pylist(), sources["src_n_fg_max"].to_pylist()))
    examined = vote([group.select(LABEL_SCHEMA.names)], conf)
    stats = {"voted": examined.num_rows}
    table = pair_check(examined, conf.pair_radius)
    stats["after_pair_check"] = table.num_rows
    pairs = examined.group_by(["src_image_id", "tgt_image_id"]).aggregate([])
    table = confidence_filter(table, conf, n_fg, pairs)
    stats["confident"] = table.num_rows
    if sphere is not None and table.num_rows:
        t0 = time.perf_counter()
        table, stats["feature_reads"] = sphere_check(table, sphere, conf.sphere_deg, copy_key)
        stats["sphere_filter_s"] = time.perf_counter() - t0
    stats["labels"] = table.num_rows
    files.write_part(category, part, table, stats, examined)
    return pa.table({"category": [category], "part": pa.array([part], pa.int32()), "stats": [json.dumps(stats)]})


def sphere_check(table: pa.Table, sphere: dict, threshold_deg: float, copy_key: str) -> tuple[pa.Table, int]:
    """The spherical filter (labels.sphere): the labels whose ends map within the threshold,
    and the features it read from the cache."""
    from .labels import Foreground, sphere_filter  # torch, only where the filter is on
    from .models import SphereMapper, load_checkpoint
    from .node_copy import NodeCopy
    from .sphere import map_image

    features, reader = sphere["features"], NodeCopy(copy_key)
    mapper = load_checkpoint(SphereMapper, sphere["checkpoint"])
    ids = sorted(set(table.column("src_image_id").to_pylist()) | set(table.column("tgt_image_id").to_pylist()))
    fgs = {i: Foreground.of(features.load(i, reader.read)) for i in ids}
    points = {i: map_image(mapper, fg.feats) for i, fg in fgs.items()}
    return sphere_filter(table, fgs, points, threshold_deg), reader.reads
