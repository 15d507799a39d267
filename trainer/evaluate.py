"""Matching quality of raw backbone features or an adapter, by window soft-argmax.

- `pseudo_pck`: against held-out pseudo-labels (pairs of two held-out images), the
  model-selection metric when there is no ground truth.
- `truth_pck`: against the truth where homographies are known (the demo): query
  points are the source's foreground cells whose true position falls on the
  target's foreground; pairs split into near and far by azimuth gap.
PCK@a: within a * (longer side of the target image) of the reference position.
"""

import numpy as np
import torch

from labelgen.geometry import transfer

from .adapter import Adapter
from .data import FeatureBank, LabelData, Pair
from .losses import sample, window_soft_argmax

default_conf = {
    "window": 7,
    "temperature": 0.02,
    "alphas": [0.05, 0.10],
    "far_deg": 60.0,  # azimuth gap from which a pair counts as far
}


class Matcher:
    """Features of the raw backbone (adapter None) or of an adapter, per image, cached."""

    def __init__(self, bank: FeatureBank, adapter: Adapter | None, conf):
        self.bank, self.adapter, self.conf, self._feats = bank, adapter, conf, {}

    @torch.inference_mode()
    def feats(self, image_id: str) -> torch.Tensor:
        if image_id not in self._feats:
            grid = self.bank.grid(image_id)
            self._feats[image_id] = grid if self.adapter is None else self.adapter.eval()(grid[None])[0]
        return self._feats[image_id]

    @torch.inference_mode()
    def predict(self, src: str, tgt: str, src_xy_px: np.ndarray) -> np.ndarray:
        """Target pixels for source pixels."""
        q = sample(self.feats(src), self.bank.to_grid(src, src_xy_px))
        grid_xy = window_soft_argmax(q, self.feats(tgt), self.conf.window, self.conf.temperature)
        f = self.bank(tgt)
        return ((grid_xy + 0.5) * f.stride / f.scale).numpy()


def pck(rel_err: np.ndarray, alphas) -> dict[str, float]:
    """Fractions of errors (relative to the target's longer side) within each alpha."""
    return {f"pck@{a:.2f}": float((rel_err <= a).mean()) if len(rel_err) else float("nan") for a in alphas}


def pseudo_pck(matcher: Matcher, pairs: list[Pair], alphas) -> dict[str, float]:
    errs = []
    for p in pairs:
        f = matcher.bank(p.tgt)
        errs.append(np.linalg.norm(matcher.predict(p.src, p.tgt, p.src_xy) - p.tgt_xy, axis=1) / max(f.width, f.height))
    return pck(np.concatenate(errs) if errs else np.zeros(0), alphas)


def truth_pairs(data: LabelData) -> list[tuple[str, str, float]]:
    """Ordered pairs of held-out images of one category with known truth, and their azimuth gap."""
    imgs = data.images[(data.images["split"] == "val") & data.images["homography"].notna()]
    out = []
    for _, g in imgs.groupby("category"):
        for a in g.index:
            for b in g.index:
                if a != b:
                    gap = abs((g.at[a, "azimuth"] - g.at[b, "azimuth"] + 540) % 360 - 180)
                    out.append((a, b, float(gap)))
    return out


def truth_pck(matcher: Matcher, data: LabelData, conf) -> dict[str, float]:
    """PCK against the true homographies on held-out image pairs, near and far."""
    hom = {i: np.asarray(h, dtype=np.float64).reshape(3, 3) for i, h in data.images["homography"].dropna().items()}
    tally = {"near": [], "far": []}
    for a, b, gap in truth_pairs(data):
        fa, fb = matcher.bank(a), matcher.bank(b)
        cells = fa.fg_index()
        src = fa.to_pixels(fa.cell_xy(cells)).numpy()
        true = transfer(hom[a], hom[b], src)
        col = np.floor(true[:, 0] * fb.scale / fb.stride).astype(int)
        row = np.floor(true[:, 1] * fb.scale / fb.stride).astype(int)
        h, w = fb.fg.shape
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        ok[ok] = fb.fg.numpy()[row[ok], col[ok]]  # the true position lies on the target's object
        if not ok.any():
            continue
        err = np.linalg.norm(matcher.predict(a, b, src[ok]) - true[ok], axis=1) / max(fb.width, fb.height)
        tally["far" if gap >= conf.far_deg else "near"].append(err)
    out = {}
    for kind, errs in tally.items():
        err = np.concatenate(errs) if errs else np.zeros(0)
        out.update({f"{kind}_{k}": v for k, v in pck(err, conf.alphas).items()})
        out[f"{kind}_points"] = int(len(err))
    return out
