"""`python -m labelgen.evaluate [store=... run_id=...]`: label precision against truth.

Needs the truth: a manifest column `homography` (photo -> view, 9 numbers), as
the demo has. A label is correct at a when its target lies within a * (longer
side of the target image) of the true position. For the image pairs of the run
it reports: raw nearest neighbours, nearest neighbours after the cycle check,
the stored (chained) labels by hop distance, and, for the farthest pairs, the
chained labels against direct matching of the same pairs.
"""

import json
import sys

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from .chain import cycle_hop, pair_nn
from .cli import run_command
from .features import cache_uri, load_features
from .geometry import transfer
from .io import join
from .labels import Foreground
from .store import LabelStore

default_conf = {
    "store": "labelstore",  # a folder or s3://bucket/prefix
    "run_id": None,  # default: the latest committed run
    "alphas": [0.05, 0.10],  # thresholds, fractions of the longer image side
    "max_pairs": 40,  # image pairs per category and hop distance for the direct baselines
    "seed": 0,  # which pairs the direct baselines sample
    "output": None,  # also write the table as JSON here
}


def correct(hom_src, hom_tgt, src_xy, tgt_xy, size, alphas) -> np.ndarray:
    """(N, len(alphas)) bool: is each predicted target within a * size of the truth."""
    err = np.linalg.norm(transfer(hom_src, hom_tgt, src_xy) - tgt_xy, axis=1)
    return err[:, None] <= np.asarray(alphas)[None, :] * size


def xy(frame: pd.DataFrame, end: str) -> np.ndarray:
    return frame[[f"{end}_x", f"{end}_y"]].to_numpy(dtype=np.float64)


def direct_matches(fa: Foreground, fb: Foreground, radius: float):
    """Raw nearest neighbours of all of A's foreground in B, and the cycle-check mask."""
    ab, _ = pair_nn(fa.feats, fb.feats)
    src = torch.arange(len(fa.feats))
    tgt, _, keep = cycle_hop(ab, src, fa.grid, fa.feats, fb.feats, radius, allowed=torch.ones(len(src), dtype=torch.bool))
    return fa.pixels[src].numpy(), fb.pixels[tgt].numpy(), keep.numpy()


class Tally:
    """Counts of correct labels per alpha, and the matches tried, per group."""

    def __init__(self, alphas):
        self.alphas, self.rows = alphas, {}

    def add(self, category: str, kind: str, ok: np.ndarray, tried: int):
        for key in ((category, kind), ("ALL", kind)):
            row = self.rows.setdefault(key, {"n": 0, "tried": 0, "ok": np.zeros(len(self.alphas))})
            row["n"] += len(ok)
            row["tried"] += tried
            row["ok"] += ok.sum(axis=0)

    def frame(self) -> pd.DataFrame:
        recs = []
        for (category, kind), r in sorted(self.rows.items(), key=lambda kv: (kv[0][0] == "ALL", kv[0])):
            rec = {"category": category, "kind": kind, "labels": r["n"], "yield": r["n"] / max(1, r["tried"])}
            for a, ok in zip(self.alphas, r["ok"]):
                rec[f"P@{a:.2f}"] = ok / max(1, r["n"])
            recs.append(rec)
        return pd.DataFrame(recs)


def evaluate(conf) -> pd.DataFrame:
    store = LabelStore(conf.store)
    con = store.connect()
    run_id = conf.run_id or con.execute(
        "SELECT run_id FROM runs WHERE status = 'committed' ORDER BY finished DESC LIMIT 1"
    ).fetchone()
    if not run_id:
        raise ValueError(f"store {store.root} has no committed run to evaluate")
    run_id = run_id if isinstance(run_id, str) else run_id[0]
    row = con.execute("SELECT backbone_fingerprint, config FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise ValueError(f"run_id={run_id} is not in the store {store}")
    fingerprint, run_conf = row[0], OmegaConf.create(row[1])
    truth = con.execute(
        "SELECT image_id, homography FROM images WHERE run_id = ? AND homography IS NOT NULL", [run_id]
    ).fetchall()
    if not truth:
        raise ValueError(f"run {run_id} has no images with a homography: there is no truth to evaluate against")
    hom = {i: np.asarray(h, dtype=np.float64).reshape(3, 3) for i, h in truth}
    labels = con.execute(
        "SELECT category, src_image_id, tgt_image_id, src_x, src_y, tgt_x, tgt_y, hops FROM labels WHERE run_id = ?",
        [run_id],
    ).df()
    con.close()
    cache_root = run_conf.features.cache or join(store.uri, "features")
    feats = {}

    def fg(image_id) -> Foreground:
        if image_id not in feats:
            feats[image_id] = Foreground.of(load_features(cache_uri(cache_root, fingerprint, image_id)))
        return feats[image_id]

    tally, rng, k = Tally(list(conf.alphas)), np.random.default_rng(conf.seed), run_conf.pairing.k
    for (category, a, b, hops), g in labels.groupby(["category", "src_image_id", "tgt_image_id", "hops"]):
        ok = correct(hom[a], hom[b], xy(g, "src"), xy(g, "tgt"), max(fg(b).size), conf.alphas)
        tally.add(category, f"chained hops={hops}", ok, len(fg(a).feats))
    by_pair = labels.groupby(["src_image_id", "tgt_image_id"])
    pairs = labels.groupby(["category", "hops", "src_image_id", "tgt_image_id"]).size().reset_index()
    for (category, hops), g in pairs.groupby(["category", "hops"]):
        sample = g.iloc[rng.permutation(len(g))[: conf.max_pairs]]
        for a, b in zip(sample["src_image_id"], sample["tgt_image_id"]):
            src, tgt, keep = direct_matches(fg(a), fg(b), run_conf.labels.radius)
            size = max(fg(b).size)
            ok = correct(hom[a], hom[b], src, tgt, size, conf.alphas)
            tally.add(category, f"direct raw hops={hops}", ok, len(src))
            tally.add(category, f"direct cycle hops={hops}", ok[keep], len(src))
            if hops == k - 1:
                chained = by_pair.get_group((a, b))
                ok_c = correct(hom[a], hom[b], xy(chained, "src"), xy(chained, "tgt"), size, conf.alphas)
                tally.add(category, "far: chained", ok_c, len(src))
                tally.add(category, "far: direct cycle", ok[keep], len(src))
    result = tally.frame()
    result.attrs["run_id"] = run_id
    return result


def report(conf) -> int:
    result = evaluate(conf)
    pd.set_option("display.width", 200)
    print(f"label precision of run {result.attrs['run_id']} (yield = labels / source foreground patches)")
    print(result.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if conf.output:
        with open(conf.output, "w") as f:
            json.dump({"run_id": result.attrs["run_id"], "rows": result.to_dict(orient="records")}, f, indent=1)
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, report, argv)


if __name__ == "__main__":
    sys.exit(main())
