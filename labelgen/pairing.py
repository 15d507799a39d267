"""K-tuples of pose neighbours: a monotone sweep, easy steps to hard, anchored at every image.

Each posed image anchors up to `tuples_per_image` distinct tuples (all it has where it has
fewer), so a category's tuples grow with its size and no image is left without one; memory
stays linear in the category (nothing N x N is ever built).

Azimuth only (SPair): a tuple is (anchor, one image of the next azimuth bin, one of the
bin after, ...) in either direction. An anchor's tuples form a product of its next bins'
members, so they are counted exactly and drawn uniformly without replacement.

Full 3D pose (azimuth, elevation and in-plane theta all given): hops are measured by
the geodesic angle between rotations; each hop turns the object by `bin_deg` (+-50%)
and ends at least a quarter step farther from the anchor. Tuples are random walks, each
hop uniform over its valid candidates: drawn by rejection from the whole category (the
band holds a good share of it), and, for the hops still pending (rare candidates, or
none), enumerated exactly from a KD-tree of the rotations flattened to 9-D, where the
chord ||Ri - Rj|| = 2 sqrt(2) sin(angle / 2) makes a geodesic band an annulus.

No pose at all (the documented fallback): hops follow global feature similarity
(mean foreground feature of each image), each to one of the previous image's nearest
neighbours and less similar to the anchor, a sweep in appearance instead of pose.
In a category paired by pose, the images without one (none given, an estimate too
unsure: labelgen.viewpoint) anchor such walks over the whole category (pairing.pose=auto).

Anchors whose walks found fewer distinct tuples than the budget have their walks
enumerated (at most `ENUMERATE_CAP` x budget prefixes per anchor and step), so an anchor
with few tuples takes all of them and one with any takes at least one.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from .errors import UsageError
from .geometry import rotation


@dataclass
class PairingConf:
    k: int = 4  # images per tuple
    bin_deg: float = 45.0  # one hop: an azimuth bin, or this many degrees of rotation
    tuples_per_image: int = 30  # tuples each posed image anchors (both directions together), all it has if fewer
    max_tuples: int | None = None  # optional cap per category: a uniform random subset
    both_directions: bool = True  # sweep from each anchor towards larger and smaller azimuths
    pose: str = "auto"  # auto (geodesic with azimuth+elevation+theta, bins with azimuth, else similarity) | bins |
    # geodesic | similarity
    neighbours: int = 5  # similarity: hops go to one of the most similar images
    seed: int = 0  # tuple sampling


default_conf = PairingConf

REJECTION_DRAWS = 256  # geodesic: candidates drawn per hop before the exact band enumeration takes over
DRAWS_PER_ROUND = 8  # of them, drawn at once per pending hop (a hop's share of the band is often 5-40%)
WALKS_PER_CHUNK = 1 << 15  # geodesic hops drawn together (DRAWS_PER_ROUND x 9 floats each)
SAMPLE_ROUNDS = 6  # rounds of walks for anchors short of their budget before their walks are enumerated
ENUMERATE_CAP = 4  # enumeration keeps at most this many x budget prefixes per anchor and step
PAIRS_PER_CHUNK = 1 << 22  # candidate pairs held at once by the exact enumerations


def keep_per_group(group: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Mask keeping `limit` random items of each group: a uniform subset without a loop per group."""
    order = rng.permutation(len(group))
    order = order[np.argsort(group[order], kind="stable")]
    g = group[order]
    rank = np.arange(len(g)) - np.searchsorted(g, g, side="left")
    keep = np.zeros(len(group), dtype=bool)
    keep[order[rank < limit]] = True
    return keep


def choose(parent: np.ndarray, child: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform child per parent 0..n-1 (-1 where a parent has none)."""
    out = np.full(n, -1, dtype=np.int64)
    one = keep_per_group(parent, 1, rng)
    out[parent[one]] = child[one]
    return out


def keep_distinct(tuples: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct tuples, at most `budget` random ones per anchor (first column)."""
    tuples = np.unique(tuples, axis=0)
    return tuples[keep_per_group(tuples[:, 0], budget, rng)]


# ---- azimuth bins --------------------------------------------------------------------


def azimuth_bins(azimuth: np.ndarray, bin_deg: float) -> tuple[np.ndarray, int | None]:
    """Bin index per image (bin b spans [(b - 1/2) bin_deg, (b + 1/2) bin_deg)), and the
    number of bins on the circle when they wrap around."""
    n = 360.0 / bin_deg
    wrap = round(n) if abs(n - round(n)) < 1e-6 else None
    bins = np.floor(np.asarray(azimuth, dtype=np.float64) / bin_deg + 0.5).astype(np.int64)
    return (bins % wrap if wrap else bins), wrap


def distinct_draws(total: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """(A, budget): per row, min(total, budget) distinct uniform integers in [0, total), -1
    after them; Floyd's algorithm run on all rows at once (budget steps, no rejection)."""
    m = np.minimum(total, budget)
    out = np.full((len(total), budget), -1, dtype=np.int64)
    for i in range(budget):
        j = total - m + i
        t = np.minimum((rng.random(len(total)) * (j + 1)).astype(np.int64), j)  # uniform in [0, j]
        seen = (out[:, :i] == t[:, None]).any(axis=1)
        out[:, i] = np.where(i < m, np.where(seen, j, t), -1)
    return out


def bin_tuples(azimuth: np.ndarray, anchors: np.ndarray, conf, rng: np.random.Generator) -> np.ndarray:
    """(T, K) tuples over posed `azimuth` (no NaN): each of `anchors` (indices), then one image
    of each next bin in a direction; per anchor up to tuples_per_image of its tuples, uniform."""
    bins, wrap = azimuth_bins(azimuth, conf.bin_deg)
    order = np.argsort(bins, kind="stable")
    ids, start, size = np.unique(bins[order], return_index=True, return_counts=True)
    steps = np.array([1, -1] if conf.both_directions else [1])
    seq = bins[anchors, None, None] + steps[None, :, None] * np.arange(1, conf.k)  # (A, D, K-1) next bins
    seq = seq % wrap if wrap else seq
    loc = np.minimum(np.searchsorted(ids, seq), len(ids) - 1)
    occupied = (ids[loc] == seq).all(axis=2)
    sizes = np.where(occupied[..., None], size[loc], 0)
    # tuples per direction; clipped where a huge product would overflow (its tuples stay valid, a subset)
    count = np.minimum(np.prod(sizes.astype(np.float64), axis=2), 2.0**62).astype(np.int64)
    draws = distinct_draws(count.sum(axis=1), conf.tuples_per_image, rng)
    row, col = np.nonzero(draws >= 0)
    local = draws[row, col]
    back = (local >= count[row, 0]).astype(np.int64)  # second direction after the first's tuples
    local -= back * count[row, 0]
    members = np.empty((len(row), conf.k - 1), dtype=np.int64)
    for i in range(conf.k - 2, -1, -1):  # mixed radix: the last bin's member is the lowest digit
        n = sizes[row, back, i]
        members[:, i] = order[start[loc[row, back, i]] + local % n]
        local //= n
    return np.column_stack([anchors[row], members])


# ---- walks: geodesic band and feature neighbours -------------------------------------


def trace_of(angle_deg):
    """tr(Ri^T Rj) of two rotations `angle_deg` apart: angles compare as traces, no arccos per pair."""
    return 1 + 2 * np.cos(np.deg2rad(angle_deg))


def haar(angle):
    """pi x the share of SO(3) within `angle` (radians) of a rotation: the sizes of two balls compare by it."""
    return angle - np.sin(angle)


class Band:
    """Geodesic hops: bin_deg +-50% from the previous member, and at least a quarter step
    farther from the anchor than it."""

    def __init__(self, rotations: np.ndarray, bin_deg: float):
        from scipy.spatial import cKDTree  # here: scipy's 0.4 s of imports are no --help's

        self.flat = np.ascontiguousarray(rotations.reshape(-1, 9), dtype=np.float64)
        self.tree = cKDTree(self.flat)
        self.hi = min(1.5 * bin_deg, 180.0)
        self.lo_trace, self.hi_trace = trace_of(0.5 * bin_deg), trace_of(self.hi)
        self.margin = 0.25 * bin_deg
        self.width = len(self.flat)  # the most next members a prefix can have

    def trace(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.flat[i], self.flat[j])

    def floor(self, anchor: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Largest trace to the anchor a next member may have (-inf: beyond 180 deg, none)."""
        angle = np.rad2deg(np.arccos(np.clip((self.trace(anchor, last) - 1) / 2, -1.0, 1.0))) + self.margin
        return np.where(angle <= 180.0, trace_of(np.minimum(angle, 180.0)), -np.inf)

    def ball(self, centres: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(parent, child): every image within chord `radius` of each 9-D centre (at least;
        a chunk takes its largest radius), from the KD-tree, a chunk of centres at a time."""
        from scipy.spatial import cKDTree

        chunk = max(1, PAIRS_PER_CHUNK // len(self.flat))
        parents, children = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for s in range(0, len(centres), chunk):
            r = radius[s : s + chunk].max() + 1e-9
            pairs = cKDTree(centres[s : s + chunk]).sparse_distance_matrix(self.tree, r, output_type="ndarray")
            parents.append(s + pairs["i"].astype(np.int64))
            children.append(pairs["j"].astype(np.int64))
        return np.concatenate(parents), np.concatenate(children)

    def expand(self, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(parent, child): every valid next member of each prefix (rows: anchor ... last),
        exact. The rotations lie on the 9-D sphere |X| = sqrt(3), so both constraints are
        balls: the hop's around the last member, and the far side's around -anchor
        (tr(A^T X) <= floor <=> |X + A|^2 <= 6 + 2 floor); each prefix queries the one of
        less Haar measure (near the far end, where walks run out of room, the far side's)."""
        anchor, last = prefix[:, 0], prefix[:, -1]
        floor = self.floor(anchor, last)
        live = np.flatnonzero(floor > -np.inf)
        far_side = np.pi - haar(np.arccos(np.clip((floor[live] - 1) / 2, -1.0, 1.0))) < haar(np.deg2rad(self.hi))
        centres = np.where(far_side[:, None], -self.flat[anchor[live]], self.flat[last[live]])
        radius = np.sqrt(np.where(far_side, 6 + 2 * floor[live], 6 - 2 * self.hi_trace))
        parent, child = self.ball(centres, radius)
        parent = live[parent]
        hop = self.trace(last[parent], child)
        ok = (hop >= self.hi_trace) & (hop <= self.lo_trace) & (self.trace(anchor[parent], child) <= floor[parent])
        return parent[ok], child[ok]

    def draw(self, prefix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniform valid next member per prefix by rejection (-1: none in REJECTION_DRAWS):
        the first valid of uniform draws from the whole category, DRAWS_PER_ROUND at a time."""
        anchor, last = self.flat[prefix[:, 0]], self.flat[prefix[:, -1]]
        floor = self.floor(prefix[:, 0], prefix[:, -1])
        out, pending = np.full(len(prefix), -1, dtype=np.int64), np.arange(len(prefix))
        for _ in range(REJECTION_DRAWS // DRAWS_PER_ROUND):
            cand = rng.integers(len(self.flat), size=(len(pending), DRAWS_PER_ROUND))
            rows = self.flat[cand]
            hop = np.einsum("pmd,pd->pm", rows, last[pending])
            ok = (hop >= self.hi_trace) & (hop <= self.lo_trace)
            ok &= np.einsum("pmd,pd->pm", rows, anchor[pending]) <= floor[pending, None]
            found = ok.any(axis=1)
            out[pending[found]] = cand[found, ok[found].argmax(axis=1)]
            pending = pending[~found]
            if not len(pending):
                break
        return out

    def step(self, prefix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform valid next member per prefix (-1: none): by rejection, in chunks of
        prefixes; the few still pending take theirs from the exact enumeration."""
        chunks = range(0, len(prefix), WALKS_PER_CHUNK)
        out = np.concatenate(
            [np.zeros(0, dtype=np.int64), *(self.draw(prefix[s : s + WALKS_PER_CHUNK], rng) for s in chunks)]
        )
        pending = np.flatnonzero(out < 0)
        out[pending] = choose(*self.expand(prefix[pending]), len(pending), rng)
        return out


def nearest_neighbours(descriptors: np.ndarray, n: int) -> np.ndarray:
    """(N, n) indices of each image's n most similar others (cosine), most similar first;
    a chunked matmul, so only a chunk of rows times N similarities is held."""
    chunk = max(1, PAIRS_PER_CHUNK // len(descriptors))
    out = np.empty((len(descriptors), n), dtype=np.int64)
    for s in range(0, len(descriptors), chunk):
        sim = descriptors[s : s + chunk] @ descriptors.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        top = np.argpartition(-sim, n - 1, axis=1)[:, :n]
        out[s : s + chunk] = np.take_along_axis(top, np.argsort(-np.take_along_axis(sim, top, 1), axis=1), 1)
    return out


class Similar:
    """Feature hops: to one of the previous member's `neighbours` most similar images, and
    strictly less similar to the anchor than it."""

    def __init__(self, descriptors: np.ndarray, neighbours: int):
        self.desc = np.asarray(descriptors, dtype=np.float32)
        self.nearest = nearest_neighbours(self.desc, min(neighbours, len(self.desc) - 1))
        self.width = self.nearest.shape[1]  # the most next members a prefix can have

    def dist(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return 1 - np.einsum("ij,ij->i", self.desc[i], self.desc[j])

    def expand(self, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(parent, child): every valid next member of each prefix (rows: anchor ... last)."""
        n = self.nearest.shape[1]
        parent = np.repeat(np.arange(len(prefix)), n)
        child = self.nearest[prefix[:, -1]].ravel()
        far = np.empty(len(child), dtype=bool)
        chunk = max(1, PAIRS_PER_CHUNK // self.desc.shape[1])
        for s in range(0, len(child), chunk):
            p, c = parent[s : s + chunk], child[s : s + chunk]
            a, last = prefix[p, 0], prefix[p, -1]
            far[s : s + chunk] = self.dist(a, c) >= self.dist(a, last) + 1e-6
        return parent[far], child[far]

    def step(self, prefix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform valid next member per prefix (-1: none): few candidates, all checked."""
        return choose(*self.expand(prefix), len(prefix), rng)


def walks(hops, starts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(W, k) random walks from `starts`, one uniform valid hop at a time; dead ends dropped."""
    prefix = starts[:, None]
    for _ in range(k - 1):
        nxt = hops.step(prefix, rng)
        prefix = np.column_stack([prefix[nxt >= 0], nxt[nxt >= 0]])
    return prefix


def enumerate_walks(hops, anchors: np.ndarray, k: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Every walk of k from each anchor, keeping at most `cap` random prefixes per anchor at
    each step (exact for anchors with few walks); anchors in chunks that bound the pairs held."""
    out = [np.zeros((0, k), dtype=np.int64)]
    chunk = max(1, PAIRS_PER_CHUNK // (cap * hops.width))
    for s in range(0, len(anchors), chunk):
        prefix = anchors[s : s + chunk, None]
        for _ in range(k - 1):
            parent, child = hops.expand(prefix)
            prefix = np.column_stack([prefix[parent], child])
            prefix = prefix[keep_per_group(prefix[:, 0], cap, rng)]
        out.append(prefix)
    return np.concatenate(out)


def walk_tuples(hops, anchors: np.ndarray, k: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    """(T, k) distinct walks, up to `budget` per anchor. Rounds of random walks (a quarter
    more than the shortfall, doubling each round: walks that often die need many tries) for
    the anchors still short; an anchor whose walks mostly repeat ones it has holds few
    tuples, and it, like those still short after the rounds, has its walks enumerated."""
    done, tuples = [], np.zeros((0, k), dtype=np.int64)
    short, need, few = anchors, np.full(len(anchors), budget), [np.zeros(0, dtype=np.int64)]
    have = np.zeros(anchors.max() + 1, dtype=np.int64)
    for r in range(SAMPLE_ROUNDS):
        new = walks(hops, np.repeat(short, (need + (need + 3) // 4) << r), k, rng)
        before = have
        tuples = keep_distinct(np.concatenate([tuples, new]), budget, rng)
        have = np.bincount(tuples[:, 0], minlength=len(have))
        full = have[tuples[:, 0]] == budget
        done.append(tuples[full])
        tuples = tuples[~full]
        short = short[have[short] < budget]
        repeats = 2 * (have - before)[short] < np.bincount(new[:, 0], minlength=len(have))[short]
        few.append(short[repeats])
        short = short[~repeats]
        need = budget - have[short]
    few = np.concatenate([*few, short])
    walked = enumerate_walks(hops, few, k, ENUMERATE_CAP * budget, rng) if len(few) else tuples[:0]
    return np.concatenate([*done, keep_distinct(np.concatenate([tuples, walked]), budget, rng)])


# ---- poses of a category -------------------------------------------------------------


def view_rotations(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """image id -> 3x3 rotation of each row with an azimuth (no elevation or theta: 0)."""
    posed = rows[rows["azimuth"].notna()] if "azimuth" in rows.columns else rows.iloc[:0]
    angle = lambda col: posed[col].fillna(0.0) if col in posed.columns else np.zeros(len(posed))  # noqa: E731
    return {
        i: rotation(a, e, t)
        for i, a, e, t in zip(posed["image_id"], posed["azimuth"], angle("elevation"), angle("theta"))
    }


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


def category_tuples(rows: pd.DataFrame, conf, descriptors=None, anchors=None) -> np.ndarray:
    """(T, k) tuples of one category's rows (positions into `rows`, lexsorted), by the pose
    the rows have: geodesic with full 3D pose, azimuth bins with azimuth, feature similarity
    without pose (`descriptors`: a function giving unit (N, C) global descriptors of the
    rows). Each row that `anchors` (a boolean array over rows; default all) marks anchors
    up to tuples_per_image tuples, the first member; the others may be any placed row. Where
    the poses make no K-tuple (azimuths that span fewer bins than K), the tuples shorten
    to the longest the poses allow, down to pairs. With pairing.pose=auto and `descriptors`,
    the rows without the category's pose (none given, or an estimate too unsure) anchor
    similarity walks over all rows, so a partly posed category leaves no image out."""
    mode = pose_mode(rows, conf)
    if mode not in POSE_COLUMNS:
        raise UsageError(f"pairing.pose={conf.pose!r}: choose auto, bins, geodesic or similarity")
    start = np.ones(len(rows), dtype=bool) if anchors is None else np.asarray(anchors, dtype=bool)
    rng = np.random.default_rng(conf.seed)
    rest = unplaced(rows, mode).to_numpy()
    tuples = mode_tuples(rows, mode, ~rest, start & ~rest, conf, descriptors, rng, range(conf.k, 1, -1))
    if conf.pose == "auto" and descriptors is not None and mode != "similarity" and (start & rest).any():
        widths = [tuples.shape[1]] if len(tuples) else range(conf.k, 1, -1)
        walked = mode_tuples(rows, "similarity", np.ones(len(rows), bool), start & rest, conf, descriptors, rng, widths)
        if len(walked):
            tuples = walked if not len(tuples) else np.unique(np.concatenate([tuples, walked]), axis=0)
    return tuples


def mode_tuples(rows, mode, placed, anchors, conf, descriptors, rng, widths) -> np.ndarray:
    """(T, k) tuples over the `placed` rows by `mode`, anchored at `anchors` (boolean arrays
    over rows), of the first of `widths` that makes any."""
    placed = np.flatnonzero(placed)
    start = np.flatnonzero(anchors[placed])
    if mode == "similarity" and descriptors is None or len(placed) < 2 or not len(start):
        return np.zeros((0, conf.k), dtype=np.int64)
    r = rows.iloc[placed]
    if mode == "geodesic":
        hops = Band(
            np.stack([rotation(a, e, t) for a, e, t in zip(r["azimuth"], r["elevation"], r["theta"])]), conf.bin_deg
        )
    elif mode == "similarity":
        hops = Similar(descriptors(r), conf.neighbours)
    for k in widths:
        if mode == "bins":
            tuples = bin_tuples(r["azimuth"].to_numpy(dtype=np.float64), start, OmegaConf.merge(conf, {"k": k}), rng)
        else:
            tuples = walk_tuples(hops, start, k, conf.tuples_per_image, rng)
        if len(tuples):
            tuples = np.unique(tuples, axis=0)  # distinct, lexsorted: tuples sharing pairs run together
            if conf.max_tuples is not None and len(tuples) > conf.max_tuples:
                tuples = tuples[np.sort(rng.choice(len(tuples), conf.max_tuples, replace=False))]
            return placed[tuples]
    return np.zeros((0, conf.k), dtype=np.int64)
