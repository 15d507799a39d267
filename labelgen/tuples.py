"""A run's tuples per category, anchored only at images not labelled yet, held as
positions into the category's image ids (a few bytes per tuple in the driver)."""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import pairing
from .features import FeatureCache

log = logging.getLogger("labelgen")


@dataclass
class CategoryTuples:
    """A category's tuples as positions into its image ids: a few bytes per tuple in the
    driver, turned into ids only chunk by chunk, as the tasks get them."""

    ids: np.ndarray  # (N,) the category's image ids
    idx: np.ndarray  # (T, K) positions into ids

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, rows: slice) -> list[tuple[str, ...]]:
        return [tuple(t) for t in self.ids[self.idx[rows]]]

    def __iter__(self):
        return iter(self[:])


@dataclass
class Tuples:
    by_category: dict[str, CategoryTuples]
    left_out: list[dict]  # bad_inputs rows: images without the pose their category is paired by
    untupled: dict[str, str]  # category -> why it got no tuple, and what to do
    pairable: int  # images that could take part in a tuple
    anchors: int  # of them, those that anchored tuples (new ones)
    paired_by: dict[str, dict[str, int]]  # category -> {its pose mode: images, similarity: images without that pose}


def make_tuples(df: pd.DataFrame, conf, features: FeatureCache, labelled: set[str] = frozenset()) -> Tuples:
    """Tuples per category, anchored only at images not `labelled` yet; the images left out
    because they lack the pose their category is paired by; per category without a tuple,
    why and what to do."""

    def descriptors(rows):  # only categories without pose need them
        return np.stack([features.load(i).descriptor() for i in rows["image_id"]])

    out, left_out, untupled, pairable, anchors, paired_by = {}, [], {}, 0, 0, {}
    for category, rows in df.groupby("category", sort=True):
        mode = pairing.pose_mode(rows, conf)
        cols = " and ".join(pairing.POSE_COLUMNS.get(mode, []))
        posed = ~pairing.unplaced(rows, mode)
        # pairing.pose=auto: images without the category's pose pair by similarity; a named mode leaves them out
        placed = posed if conf.pose != "auto" else pd.Series(True, index=rows.index)
        paired_by[category] = {mode: int(posed.sum())} | ({"similarity": int((~posed).sum())} if (~posed).any() else {})
        for _, r in rows[~placed].iterrows():
            left_out.append(
                {
                    "image_id": r["image_id"],
                    "uri": r["uri"],
                    "stage": "pairing",
                    "error": f"{r['uri']}: no {cols} while category '{category}' is paired by {mode} pose: left out of "
                    "every tuple; give its pose, or run with pairing.pose=auto (they pair by similarity)",
                }
            )
        new = (placed & ~rows["image_id"].isin(labelled)).to_numpy()
        pairable, anchors = pairable + int(placed.sum()), anchors + int(new.sum())
        if not new.any():
            continue
        idx = pairing.category_tuples(rows, conf, descriptors, anchors=new)
        out[category] = CategoryTuples(rows["image_id"].to_numpy(), idx)
        if not len(idx):
            untupled[category] = (
                f"its {len(rows)} images make no pair one hop apart ({mode} pose, pairing.bin_deg={conf.bin_deg:g}): "
                "widen pairing.bin_deg, add views of other poses, or pair by pairing.pose=similarity"
            )
            log.warning("category '%s' gets no labels: %s", category, untupled[category])
        elif idx.shape[1] < conf.k:
            log.info(
                "category '%s': its poses make no tuple of K=%d, so its tuples have %d images",
                category,
                conf.k,
                idx.shape[1],
            )
    return Tuples(out, left_out, untupled, pairable, anchors, paired_by)
