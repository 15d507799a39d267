"""The evaluation core: the error of a predicted target against truth, and precision at thresholds.

An error is the distance from the true target in units of a size that makes images comparable:
the target object's bounding-box side under part truth (SPair's unit, `labelgen.truth.judge`),
the target image's longer side under homographies (`homography_error`). A prediction is correct
at alpha (P@alpha, PCK@alpha) when its error is at most alpha; a nan error (no truth: the source
point is hidden in the target) is never correct. `labelgen.evaluate`, the SQL functions of
`queries.functions` and `trainer.evaluate` all measure with these.
"""

import numpy as np
import pandas as pd

from .geometry import transfer


def relative_error(pred: np.ndarray, true: np.ndarray, size) -> np.ndarray:
    """(N,) distances of (N, 2) predicted positions from the true ones, in units of `size`."""
    return np.linalg.norm(pred - true, axis=1) / size


def homography_error(
    hom_src: np.ndarray, hom_tgt: np.ndarray, src_xy: np.ndarray, pred_xy: np.ndarray, size
) -> np.ndarray:
    """Errors of the predicted targets of source pixels, the truth carried over by the views'
    homographies (each maps its view to the shared plane)."""
    return relative_error(pred_xy, transfer(hom_src, hom_tgt, src_xy), size)


def within(error: np.ndarray, alphas) -> np.ndarray:
    """(N, len(alphas)) bool: is each error at most each alpha (in the errors' precision, as
    numpy compares an array with a number)."""
    error = np.asarray(error)
    return error[:, None] <= np.asarray(alphas, dtype=np.result_type(error, np.float32))[None, :]


def at(alpha: float) -> str:
    """How a threshold names its column: P@0.05, pck@0.10."""
    return f"@{alpha:.2f}"


def pck(error: np.ndarray, alphas) -> dict[str, float]:
    """The share of errors within each alpha (nan without any), keyed pck@alpha."""
    ok = within(error, alphas)
    return {f"pck{at(a)}": float(ok[:, k].mean()) if len(ok) else float("nan") for k, a in enumerate(alphas)}


class Tally:
    """Labels correct at each alpha, labels, and matches tried, per (category, kind) and per
    kind over all categories (category ALL)."""

    def __init__(self, alphas):
        self.alphas, self.rows = list(alphas), {}

    def add(self, category: str, kind: str, error: np.ndarray, tried: int):
        for key in ((category, kind), ("ALL", kind)):
            row = self.rows.setdefault(key, {"n": 0, "tried": 0, "ok": np.zeros(len(self.alphas))})
            row["n"] += len(error)
            row["tried"] += tried
            row["ok"] += within(error, self.alphas).sum(axis=0)

    def frame(self) -> pd.DataFrame:
        """One row per group (ALL last): labels, yield (labels per match tried) and P@alpha."""
        recs = []
        for (category, kind), r in sorted(self.rows.items(), key=lambda kv: (kv[0][0] == "ALL", kv[0])):
            rec = {"category": category, "kind": kind, "labels": r["n"], "yield": r["n"] / max(1, r["tried"])}
            rec.update({f"P{at(a)}": ok / max(1, r["n"]) for a, ok in zip(self.alphas, r["ok"])})
            recs.append(rec)
        return pd.DataFrame(recs)
