"""Nearest-neighbour chains with relaxed cycle consistency (DIY-SC), vectorised.

Features are unit vectors of the foreground patches of each image, so the
similarity is a dot product. An adjacent image pair recurs in many tuples, so
its nearest neighbours are computed once per chunk of tuples (`Neighbours`): the
forward match never depends on the tuple, and the backward match among a tuple's
surviving patches is the first survivor in a short top-k list (by default just
the nearest), with an exact fallback when none of the list survived. All tuples
of a chunk then advance together, hop by hop, as index arithmetic over one
index space of the chunk's patches (`Patches`); their labels are merged per
tuple and counted across tuples with sorts over integer keys, not per tuple in Python.
"""

from dataclasses import dataclass

import torch

from .errors import UsageError


def best(sim: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest along `dim`, best first. k=1 is a max: on the CPU
    ~8x cheaper than torch's top-k, whose cost hardly depends on k."""
    k = min(k, sim.shape[dim])
    if k == 1:
        return sim.max(dim=dim, keepdim=True)
    top = sim.topk(k, dim=dim)
    return top.values, top.indices


def nearest(fa: torch.Tensor, fb: torch.Tensor, k: int, dims: tuple[int, ...] = (1, 0)) -> list[torch.Tensor]:
    """Top-k of the similarity matrix fa @ fb.T along each of `dims`, as indices, best first:
    (Na, k) patches of B per patch of A for dim 1, (Nb, k) patches of A per patch of B for
    dim 0. One float32 matmul: a bf16 screen is faster only where the CPU has bf16 units, needs
    an exact re-rank of most rows at a safe margin, and changes near-tied matches (README:
    Performance)."""
    sim = fa @ fb.T
    out = [best(sim, k, d)[1] if d == 1 else best(sim, k, d)[1].T for d in dims]
    return [torch.cat([t, t[:, -1:].expand(-1, k - t.shape[1])], dim=1) for t in out]  # fewer than k: repeat the last


def ranges(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The concatenated ranges [lo_i, hi_i) and, for each element, its range i."""
    n = hi - lo
    seg = torch.repeat_interleave(torch.arange(len(n), device=n.device), n)
    first = torch.cumsum(n, 0) - n
    return lo[seg] + torch.arange(len(seg), device=n.device) - first[seg], seg


@dataclass
class Patches:
    """The foreground patches of a set of images in one index space: image i owns
    patches start[i] .. start[i + 1] - 1."""

    feats: torch.Tensor  # (G, C) unit vectors
    grid: torch.Tensor  # (G, 2) grid (col, row) in the image's cells
    start: torch.Tensor  # (n + 1,)

    @classmethod
    def cat(cls, feats: list[torch.Tensor], grids: list[torch.Tensor]) -> "Patches":
        sizes = torch.tensor([len(f) for f in feats], device=feats[0].device)
        return cls(torch.cat(feats), torch.cat(grids), torch.cat([sizes.new_zeros(1), sizes.cumsum(0)]))

    @property
    def image(self) -> torch.Tensor:
        """(G,) the image of each patch."""
        return ranges(self.start[:-1], self.start[1:])[1]

    def of(self, i: int) -> slice:
        return slice(int(self.start[i]), int(self.start[i + 1]))


class Neighbours:
    """For ordered image pairs (a, b): the k patches of b most similar to each patch of a,
    as patch indices, best first. One similarity matmul fills both directions of a pair."""

    def __init__(self, patches: Patches, pairs: list[tuple[int, int]], topk: int = 1):
        n, keys, blocks = len(patches.start) - 1, [], []
        for a, b in sorted({(min(p), max(p)) for p in pairs}):
            a_to_b, b_to_a = nearest(patches.feats[patches.of(a)], patches.feats[patches.of(b)], topk)
            keys += [a * n + b, b * n + a]
            blocks += [a_to_b + patches.start[b], b_to_a + patches.start[a]]
        device = patches.start.device
        sizes = torch.tensor([len(x) for x in blocks], dtype=torch.long, device=device)
        keys, order = torch.tensor(keys, dtype=torch.long, device=device).sort()
        self.keys, self.n, self.patches = keys, n, patches
        self.table = torch.cat(blocks) if blocks else torch.zeros(0, topk, dtype=torch.long, device=device)
        self.first = (sizes.cumsum(0) - sizes)[order]  # first table row of each pair, in key order

    def __call__(self, a: torch.Tensor, b: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """(len(patch), k) nearest patches in image b[i] of patch[i] of image a[i]."""
        row = self.first[torch.searchsorted(self.keys, a * self.n + b)] + patch - self.patches.start[a]
        return self.table[row]


def back_match(
    cand: torch.Tensor,
    allowed: torch.Tensor,
    targets: torch.Tensor,
    group: torch.Tensor,
    seeds: torch.Tensor,
    feats: torch.Tensor,
) -> torch.Tensor:
    """For each target, its most similar allowed patch: the first allowed one of its
    candidate list `cand` (T, k), else the exact best among its group's seeds (`seeds`
    sorted by `group`)."""
    first = allowed.to(torch.uint8).argmax(dim=1)  # first allowed candidate (argmax takes the first max)
    out = cand.gather(1, first[:, None]).squeeze(1)
    miss = ~allowed.any(dim=1)
    if miss.any():
        lo, hi = torch.searchsorted(group, group[miss]), torch.searchsorted(group, group[miss], right=True)
        for g, a, b in torch.stack([group[miss], lo, hi], 1).unique(dim=0).tolist():
            m, pool = miss & (group == g), seeds[a:b]
            out[m] = pool[(feats[targets[m]] @ feats[pool].T).argmax(dim=1)]
    return out


def cycle_hop(
    nn: Neighbours,
    src: torch.Tensor,
    dst: torch.Tensor,
    seeds: torch.Tensor,
    group: torch.Tensor,
    patches: Patches,
    radius: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-match each seed patch of image src[i] into image dst[i], match back among the
    seeds of its group (sorted by group, then patch). Returns the targets, the cycle error
    (grid units of the source image) and the keep mask (error <= radius)."""
    if not len(seeds):
        return seeds, torch.zeros(0, device=seeds.device), torch.zeros(0, dtype=torch.bool, device=seeds.device)
    targets = nn(src, dst, seeds)[:, 0]
    cand = nn(dst, src, targets)
    # a candidate is allowed when it is a seed of the same group: look its key up among the seeds'
    span = len(patches.feats)
    seed_keys = group * span + seeds
    keys = group[:, None] * span + cand
    pos = torch.searchsorted(seed_keys, keys).clamp(max=len(seed_keys) - 1)
    back = back_match(cand, seed_keys[pos] == keys, targets, group, seeds, patches.feats)
    err = (patches.grid[back] - patches.grid[seeds]).norm(dim=1)
    return targets, err, err <= radius


@dataclass
class Chains:
    tuple: torch.Tensor  # (M,) the tuple of each surviving chain
    idx: torch.Tensor  # (M, K) its patch in each image of the tuple
    err: torch.Tensor  # (M, K-1) cycle error of each hop, in grid units of the hop's source
    survivors: list[int]  # chains alive after each hop, starting with the first images' patches


def chain(tuples: torch.Tensor, patches: Patches, nn: Neighbours, radius: float) -> Chains:
    """Chain every patch of each tuple's first image through the tuple (`tuples`: (T, K)
    image indices); a chain dies at its first failed hop."""
    idx, tid = ranges(patches.start[tuples[:, 0]], patches.start[tuples[:, 0] + 1])
    idx, err, span = idx[:, None], torch.zeros(len(idx), 0, device=idx.device), len(patches.feats)
    survivors = [len(idx)]
    for h in range(tuples.shape[1] - 1):
        seeds, inverse = (tid * span + idx[:, -1]).unique(return_inverse=True)
        group, seeds = seeds // span, seeds % span
        targets, seed_err, keep = cycle_hop(nn, tuples[group, h], tuples[group, h + 1], seeds, group, patches, radius)
        alive = keep[inverse]
        tid, idx = tid[alive], torch.cat([idx[alive], targets[inverse][alive, None]], dim=1)
        err = torch.cat([err[alive], seed_err[inverse][alive, None]], dim=1)
        survivors.append(len(idx))
    return Chains(tid, idx, err, survivors)


@dataclass
class Labels:
    """Distinct composed labels, each for both of its directions: src -> tgt and tgt -> src
    share their chains, so their support and cycle error."""

    src: torch.Tensor  # (L,) patch
    tgt: torch.Tensor  # (L,) patch
    hops: torch.Tensor  # (L,) positions apart in the tuple
    cycle_error: torch.Tensor  # (L,) smallest over tuples and chains of the worst hop error between them, pixels
    support: torch.Tensor  # (L,) tuples that proposed it


def compose(chains: Chains, span: int, hop_px: torch.Tensor) -> Labels:
    """Every pair of positions (i < j) of a tuple gets its chains' matches; a label counts
    once per tuple (best chain's error) and `support` counts the tuples that proposed it,
    in either direction (a tuple's reverse sweep proposes the same label turned around).
    `hop_px` (M, K-1) converts each chain's hop errors to pixels of the hop's source."""
    k = chains.idx.shape[1]
    if len(chains.tuple) and (int(chains.tuple.max()) + 1) * k * span * span >= 2**63:
        raise UsageError(
            f"a chunk of {int(chains.tuple.max()) + 1} tuples over {span} patches overflows the label keys: "
            "lower labels.tuples_per_task"
        )
    err_px = chains.err * hop_px
    keys, cycles = [], []
    for i in range(k):
        for j in range(i + 1, k):
            a, b = chains.idx[:, i], chains.idx[:, j]
            keys.append(((chains.tuple * k + (j - i)) * span + torch.minimum(a, b)) * span + torch.maximum(a, b))
            cycles.append(err_px[:, i:j].amax(dim=1))
    per_tuple, inverse = torch.cat(keys).unique(return_inverse=True)
    cyc = err_px.new_full((len(per_tuple),), float("inf")).scatter_reduce(0, inverse, torch.cat(cycles), reduce="amin")
    label, inverse, support = (per_tuple % (k * span * span)).unique(return_inverse=True, return_counts=True)
    cyc = err_px.new_full((len(label),), float("inf")).scatter_reduce(0, inverse, cyc, reduce="amin")
    return Labels(label // span % span, label % span, label // (span * span), cyc, support)


def match_pair(fa: torch.Tensor, fb: torch.Tensor, pos_a: torch.Tensor, radius: float):
    """Direct matches of every patch of A in B (what the chains are compared against):
    the targets, the cycle check's keep mask and whether each match is mutual."""
    patches = Patches.cat([fa, fb], [pos_a, pos_a.new_zeros(len(fb), 2)])
    nn = Neighbours(patches, [(0, 1)])
    src = torch.arange(len(fa), device=fa.device)
    a, b = torch.zeros_like(src), torch.ones_like(src)
    tgt, _, keep = cycle_hop(nn, a, b, src, a, patches, radius)
    return tgt - len(fa), keep, nn(b, a, tgt)[:, 0] == src
