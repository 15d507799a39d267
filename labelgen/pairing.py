"""K-tuples of pose neighbours: a monotone sweep through azimuth bins, easy steps to hard.

A tuple is (anchor, one image of the next bin, one of the bin after, ...) in either
direction. The full product grows as N * (N / bins)^(K-1), so tuples are sampled:
first a bin sequence, weighted by how many tuples it holds, then one image per bin.
"""

import math

import numpy as np

default_conf = {
    "k": 4,  # images per tuple
    "bin_deg": 45.0,  # azimuth bin width: one hop moves one bin
    "max_tuples": 2000,  # per category
    "both_directions": True,
    "seed": 0,
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
