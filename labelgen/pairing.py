"""K-tuples of pose neighbours: a monotone sweep, easy steps to hard.

Azimuth only (SPair): a tuple is (anchor, one image of the next azimuth bin, one of
the bin after, ...) in either direction. The full product grows as N * (N / bins)^(K-1),
so tuples are sampled: first a bin sequence, weighted by how many tuples it holds, then
one image per bin.

Full 3D pose (azimuth, elevation and in-plane theta all given): hops are measured by
the geodesic angle between rotations; each hop moves about `bin_deg` from the previous
image and farther from the anchor.

No pose at all (the documented fallback): hops follow global feature similarity
(mean foreground feature of each image), each to one of the previous image's nearest
neighbours and less similar to the anchor, a sweep in appearance instead of pose.
"""

import math

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from .geometry import geodesic_deg, rotation

default_conf = {
    "k": 4,  # images per tuple
    "bin_deg": 45.0,  # one hop: an azimuth bin, or this many degrees of rotation
    "max_tuples": 2000,  # per category
    "both_directions": True,  # sweep from each anchor towards larger and smaller azimuths
    "pose": "auto",  # auto (geodesic with azimuth+elevation+theta, bins with azimuth, else similarity) | bins | geodesic | similarity
    "neighbours": 5,  # similarity: hops go to one of the most similar images
    "seed": 0,  # tuple sampling
}


def azimuth_bins(azimuth: np.ndarray, bin_deg: float) -> tuple[np.ndarray, int | None]:
    """Bin index per image (bin b spans [(b - 1/2) bin_deg, (b + 1/2) bin_deg)), and the
    number of bins on the circle when they wrap around."""
    n = 360.0 / bin_deg
    wrap = round(n) if abs(n - round(n)) < 1e-6 else None
    bins = np.floor(np.asarray(azimuth, dtype=np.float64) / bin_deg + 0.5).astype(np.int64)
    return (bins % wrap if wrap else bins), wrap


def bin_sequences(members: dict[int, np.ndarray], k: int, wrap: int | None, both: bool):
    """Every run of k consecutive occupied bins, as lists of bin ids."""
    steps = (1, -1) if both else (1,)
    seqs = []
    for start in sorted(members):
        for step in steps:
            seq = [start + i * step for i in range(k)]
            seq = [b % wrap for b in seq] if wrap else seq
            if all(b in members for b in seq):
                seqs.append(seq)
    return seqs


def sample_tuples(azimuth: np.ndarray, conf, rng: np.random.Generator | None = None) -> np.ndarray:
    """(T, K) row indices into `azimuth` (one category); rows without a pose are skipped."""
    rng = rng or np.random.default_rng(conf.seed)
    azimuth = np.asarray(azimuth, dtype=np.float64)
    posed = np.flatnonzero(~np.isnan(azimuth))
    bins, wrap = azimuth_bins(azimuth[posed], conf.bin_deg)
    members = {b: posed[bins == b] for b in np.unique(bins)}
    seqs = bin_sequences(members, conf.k, wrap, conf.both_directions)
    if not seqs:
        return np.zeros((0, conf.k), dtype=np.int64)
    sizes = np.array([math.prod(len(members[b]) for b in s) for s in seqs], dtype=np.float64)
    total = int(sizes.sum())
    if total <= conf.max_tuples:  # small enough: take them all
        grids = [np.stack(np.meshgrid(*[members[b] for b in s], indexing="ij"), -1).reshape(-1, conf.k) for s in seqs]
        tuples = np.concatenate(grids)
    else:
        chosen, seen = [], set()
        for _ in range(50):  # draws repeat rarely; stop once enough distinct tuples are in
            need = conf.max_tuples - len(chosen)
            seq_ids = rng.choice(len(seqs), size=2 * need, p=sizes / sizes.sum())
            for s in seq_ids:
                t = tuple(int(rng.choice(members[b])) for b in seqs[s])
                if t not in seen:
                    seen.add(t)
                    chosen.append(t)
                    if len(chosen) == conf.max_tuples:
                        break
            if len(chosen) == conf.max_tuples:
                break
        tuples = np.array(chosen, dtype=np.int64)
    order = np.lexsort(tuples.T[::-1])  # neighbours in order: tuples sharing pairs run together
    return tuples[order]


def sweep_tuples(dist: np.ndarray, hop: np.ndarray, margin: float, conf, rng=None) -> np.ndarray:
    """(T, K) random walks from random anchors: each step goes along an allowed `hop`
    (N, N) and ends at least `margin` farther from the anchor (by `dist`) than before."""
    rng = rng or np.random.default_rng(conf.seed)
    n = len(dist)
    chosen, seen = [], set()
    for _ in range(20 * conf.max_tuples if n else 0):
        t = [int(rng.integers(n))]
        for _ in range(conf.k - 1):
            prev = t[-1]
            ok = hop[prev] & (dist[t[0]] >= dist[t[0], prev] + margin)
            ok[t] = False
            cand = np.flatnonzero(ok)
            if not len(cand):
                break
            t.append(int(rng.choice(cand)))
        if len(t) == conf.k and tuple(t) not in seen:
            seen.add(tuple(t))
            chosen.append(t)
            if len(chosen) == conf.max_tuples:
                break
    tuples = np.array(chosen, dtype=np.int64).reshape(-1, conf.k)
    return tuples[np.lexsort(tuples.T[::-1])] if len(tuples) else tuples


def geodesic_tuples(rotations: np.ndarray, conf) -> np.ndarray:
    """Each hop turns the object by bin_deg (+-50%) and a quarter step farther from the anchor."""
    dist = geodesic_deg(rotations)
    return sweep_tuples(dist, np.abs(dist - conf.bin_deg) <= 0.5 * conf.bin_deg, 0.25 * conf.bin_deg, conf)


def similarity_tuples(descriptors: np.ndarray, conf) -> np.ndarray:
    """No pose at all: walks on the graph of each image's `neighbours` most similar images
    (cosine of global descriptors), each step less similar to the anchor than the last."""
    dist = 1 - descriptors @ descriptors.T
    np.fill_diagonal(dist, np.inf)
    hop = np.zeros(dist.shape, dtype=bool)
    nearest = np.argsort(dist, axis=1)[:, : conf.neighbours]
    np.put_along_axis(hop, nearest, True, axis=1)
    np.fill_diagonal(dist, 0.0)
    return sweep_tuples(dist, hop, 1e-6, conf)


def view_rotations(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """image id -> 3x3 rotation of each row with an azimuth (no elevation or theta: 0)."""
    posed = rows[rows["azimuth"].notna()] if "azimuth" in rows.columns else rows.iloc[:0]
    angle = lambda col: posed[col].fillna(0.0) if col in posed.columns else np.zeros(len(posed))  # noqa: E731
    return {i: rotation(a, e, t) for i, a, e, t in zip(posed["image_id"], posed["azimuth"], angle("elevation"), angle("theta"))}


POSE_COLUMNS = {"geodesic": ["azimuth", "elevation", "theta"], "bins": ["azimuth"], "similarity": []}


def pose_mode(rows: pd.DataFrame, conf) -> str:
    """auto: geodesic when at least K rows have a full 3D pose, bins when any has an azimuth,
    else similarity."""
    if conf.pose != "auto":
        return conf.pose
    full = rows.reindex(columns=POSE_COLUMNS["geodesic"]).notna().all(axis=1)
    return "geodesic" if full.sum() >= conf.k else "bins" if rows["azimuth"].notna().any() else "similarity"


def unplaced(rows: pd.DataFrame, mode: str) -> pd.Series:
    """Rows that lack the pose `mode` pairs by: they take part in no tuple."""
    cols = POSE_COLUMNS.get(mode, [])
    return rows.reindex(columns=cols).isna().any(axis=1) if cols else pd.Series(False, index=rows.index)


def category_tuples(rows: pd.DataFrame, conf, descriptors=None) -> np.ndarray:
    """Tuples of one category's rows (positions into `rows`), by the pose the rows have:
    geodesic with full 3D pose, azimuth bins with azimuth, feature similarity without pose
    (`descriptors`: a function giving unit (N, C) global descriptors of the rows). Where
    the poses make no K-tuple (azimuths that span fewer bins than K), the tuples shorten
    to the longest the poses allow, down to pairs."""
    for k in range(conf.k, 1, -1):
        tuples = tuples_of(rows, OmegaConf.merge(conf, {"k": k}), descriptors)
        if len(tuples):
            return tuples
    return np.zeros((0, conf.k), dtype=np.int64)


def tuples_of(rows: pd.DataFrame, conf, descriptors=None) -> np.ndarray:
    """(T, conf.k) tuples of one category by the pose its rows have (category_tuples)."""
    mode = pose_mode(rows, conf)
    full = rows.reindex(columns=["azimuth", "elevation", "theta"]).notna().all(axis=1).to_numpy()
    if mode == "bins":
        return sample_tuples(rows["azimuth"].to_numpy(), conf)
    if mode == "similarity":
        return similarity_tuples(descriptors(rows), conf) if descriptors else np.zeros((0, conf.k), dtype=np.int64)
    if mode != "geodesic":
        raise ValueError(f"pairing.pose={conf.pose!r}: choose auto, bins, geodesic or similarity")
    posed = np.flatnonzero(full)
    r = rows.iloc[posed]
    rotations = np.stack([rotation(a, e, t) for a, e, t in zip(r["azimuth"], r["elevation"], r["theta"])]).reshape(-1, 3, 3)
    return posed[geodesic_tuples(rotations, conf)] if len(posed) else np.zeros((0, conf.k), dtype=np.int64)
