"""`python -m labelgen.calibrate [store=... run_id=...]`: fit labels.confidence on part truth.

Fits the logistic model of P(a label lies within 0.10 of the target's box side) on the
stored labels of a run over a rendered collection, on its `dev` split (defaults are
chosen there; `val` is only reported on), and prints the weights as overrides with the
precision and yield each labels.keep would give. Fit on labels stored with
labels.keep=null, so that the fit sees the labels the quota would remove.
"""

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from . import evaluate
from .cli import run_command
from .config import StoreConf
from .errors import UsageError
from .manifest import read_manifest
from .metrics import at, within
from .store import LabelStore
from .vote import CONFIDENCE_INPUTS, signal_frame


@dataclass
class CalibrateConf(StoreConf):
    run_id: str | None = None  # fit on this run's own labels; default: the current labels on the latest labelling
    # run's features
    split: str = "dev"  # the split to fit on; val is refused (it is for reporting)
    max_pairs: int = 60  # image pairs per category and hop distance
    seed: int = 0  # which pairs are sampled
    target_yield: float = 0.2  # the recommended labels.keep keeps at least this share of co-visible patches of pairs
    # up to 90 deg


default_conf = CalibrateConf


ALPHAS = (0.05, 0.10)  # the precision columns; the model is of being correct at the last
KEEPS = (0.04, 0.06, 0.08, 0.10, 0.11, 0.12, 0.13, 0.14, 0.16, 0.18, 0.20, 0.25, 0.30, None)  # labels.keep values tried


def thresholds(labels: pd.DataFrame, p: np.ndarray, tried: int, covisible: int) -> pd.DataFrame:
    """Precision and yield of the most confident labels at each labels.keep (labels per source
    foreground patch of the pairs examined: `tried`), ranked over the sampled pairs together:
    a run ranks each source image's pairs, which a sample of a few pairs per image cannot."""
    rows, order = [], np.argsort(-p, kind="stable")
    for keep in KEEPS:
        kept = labels.iloc[order[: len(labels) if keep is None else round(keep * tried)]]
        precision = pd.DataFrame(within(kept.error, ALPHAS), columns=[f"P{at(a)}" for a in ALPHAS]).mean()
        rows.append(
            {
                "keep": "null" if keep is None else f"{keep:g}",
                "kept": len(kept) / max(1, len(labels)),
                "yield": len(kept) / max(1, covisible),
                **precision,
                "hidden": kept.hidden.mean(),
                "mirror": kept[kept.twin_part].mirrored.mean(),
            }
        )
    return pd.DataFrame(rows)


def calibrate(conf) -> int:
    if conf.split == "val":
        raise UsageError("split=val: fit on dev; val is what the fit is reported on")
    store = LabelStore(conf.store, conf.catalog)
    run_id, features, run_conf, manifest_uri = evaluate.run_record(store, conf.run_id)
    manifest = read_manifest(manifest_uri)
    if "truth_uri" not in manifest.columns:
        raise UsageError(f"run {run_id}: its manifest {manifest_uri} has no part truth (truth_uri) to fit on")
    econf = OmegaConf.merge(
        evaluate.default_conf, {k: conf[k] for k in ("max_pairs", "seed", "run_id")}, {"sphere": "none"}
    )
    rows, stored, _ = evaluate.evaluate_parts(econf, store, run_id, features, run_conf, manifest)
    rows = rows[rows.split == conf.split]
    labels = rows[(rows.kind == stored) & rows.label]
    correct = within(labels.error, ALPHAS[-1:])[:, 0]
    if len(np.unique(correct)) < 2:
        raise UsageError(
            f"run {run_id}, split {conf.split}: {len(labels)} labels, not both right and wrong ones to fit on"
        )
    if run_conf.labels.get("keep") is not None:
        print(
            f"warning: run {run_id} kept only its most confident labels (labels.keep={run_conf.labels.keep}); the fit "
            "sees none of the others (run with labels.keep=null)"
        )
    from sklearn.linear_model import LogisticRegression  # here: 0.7 s of imports that --help paid

    model = LogisticRegression(max_iter=1000).fit(signal_frame(labels).to_numpy(), correct)
    weights = {"bias": float(model.intercept_[0]), **{k: float(w) for k, w in zip(CONFIDENCE_INPUTS, model.coef_[0])}}
    raw = rows[(rows.kind == "raw NN") & (rows.gap <= 90)]
    covisible = int((raw.label & ~raw.hidden).sum())  # one raw NN row per source foreground patch
    tried = int(rows.loc[rows.kind == stored, "tried"].sum())  # source foreground patches of the pairs examined
    table = thresholds(labels, model.predict_proba(signal_frame(labels).to_numpy())[:, 1], tried, covisible)
    ok = table[table["yield"] >= conf.target_yield]
    best = ok.loc[ok["P@0.10"].idxmax()] if len(ok) else table.iloc[0]
    print(
        f"confidence model of run {run_id}, fitted on {len(labels):,} labels of split {conf.split} "
        f"({covisible:,} co-visible source patches of pairs up to 90 deg)"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        f"\nrecommended labels.keep={best.keep}: P@0.10 {best['P@0.10']:.3f} at yield "
        f"{best['yield']:.3f} (the most precise keeping >= {conf.target_yield:g})"
    )
    print("weights: " + " ".join(f"labels.confidence.{k}={v:.3f}" for k, v in weights.items()))
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, calibrate, argv)


if __name__ == "__main__":
    sys.exit(main())
