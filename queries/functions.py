"""SQL functions of the reports: where truth says a labelled point lands, measured by labelgen.metrics."""

import re

import numpy as np
import pyarrow as pa

from labelgen.geometry import transfer
from labelgen.truth import judge, load_truth

USED = re.compile(r"\b(true_xy|part_truth)\s*\(", re.IGNORECASE)  # SQL that matches needs `register`
PART_VERDICT = pa.struct(
    [("error", pa.float64()), ("hidden", pa.bool_()), ("twin", pa.bool_()), ("mirrored", pa.bool_())]
)


def true_xy(hom_src: pa.Array, hom_tgt: pa.Array, x: pa.Array, y: pa.Array) -> pa.Array:
    """SQL `true_xy(src homography, tgt homography, x, y)`: where a source pixel truly lands."""
    if len(x) == 0:
        return pa.array([], type=pa.list_(pa.float64()))
    hs = np.stack(hom_src.to_numpy(zero_copy_only=False)).reshape(-1, 3, 3)
    ht = np.stack(hom_tgt.to_numpy(zero_copy_only=False)).reshape(-1, 3, 3)
    xy = transfer(hs, ht, np.stack([x.to_numpy(), y.to_numpy()], axis=1))
    return pa.array(list(xy), type=pa.list_(pa.float64()))


def values(lists: pa.ListArray) -> np.ndarray:
    return lists.flatten().to_numpy(zero_copy_only=False)


def part_truth(
    src_truth: pa.Array, tgt_truth: pa.Array, sx: pa.Array, sy: pa.Array, tx: pa.Array, ty: pa.Array
) -> pa.Array:
    """SQL `part_truth(src truth_uri, tgt truth_uri, [src_x], [src_y], [tgt_x], [tgt_y])`: the
    verdicts of one image pair's labels (lists, aggregated per pair so that each pair's truth
    is read and judged once) against part truth (labelgen.truth.judge): per label the error
    in target box sides (NULL where the source point is not visible in the target), hidden,
    from a twin part, mirrored."""
    sx, sy, tx, ty = (c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in (sx, sy, tx, ty))
    src_xy, tgt_xy = (np.stack([values(u), values(v)], 1) for u, v in ((sx, sy), (tx, ty)))
    offsets = sx.offsets.to_numpy() - sx.offsets[0].as_py()
    n = len(src_xy)
    out = {"error": np.full(n, np.nan), **{k: np.zeros(n, bool) for k in ("hidden", "twin_part", "mirrored")}}
    for k, (a, b) in enumerate(zip(src_truth.to_pylist(), tgt_truth.to_pylist())):
        lo, hi = offsets[k], offsets[k + 1]
        verdict = judge(load_truth(a), load_truth(b), src_xy[lo:hi], tgt_xy[lo:hi])
        for key, value in out.items():
            value[lo:hi] = verdict[key]
    error = pa.array(out["error"], mask=np.isnan(out["error"]))
    verdicts = pa.StructArray.from_arrays(
        [error, *(pa.array(out[k]) for k in ("hidden", "twin_part", "mirrored"))], fields=list(PART_VERDICT)
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), verdicts)


def register(con) -> None:
    """Add the functions to a connection."""
    con.create_function("true_xy", true_xy, ["DOUBLE[]", "DOUBLE[]", "DOUBLE", "DOUBLE"], "DOUBLE[]", type="arrow")
    con.create_function(
        "part_truth",
        part_truth,
        ["VARCHAR", "VARCHAR"] + ["DOUBLE[]"] * 4,
        "STRUCT(error DOUBLE, hidden BOOLEAN, twin BOOLEAN, mirrored BOOLEAN)[]",
        type="arrow",
    )
