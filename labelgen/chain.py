"""Nearest-neighbour chains with relaxed cycle consistency (DIY-SC), vectorised.

Features are unit vectors of the foreground patches of each image, so the
similarity is a dot product. An adjacent image pair recurs in many tuples, so
its nearest-neighbour structure is computed once (`pair_nn`): the forward match
never depends on the tuple, and the backward match among a tuple's surviving
patches is the first survivor in a short top-k list (by default just the
nearest), with an exact fallback when none of the list survived. Per tuple,
only index lookups remain.
"""

from dataclasses import dataclass

import torch


@dataclass
class PairNN:
    """Matches from image A (Na patches) to image B (Nb patches)."""

    fwd_idx: torch.Tensor  # (Na,) nearest patch of B for each patch of A
    fwd_sim: torch.Tensor  # (Na,)
    back_idx: torch.Tensor  # (Nb, k) patches of A most similar to each patch of B, best first
    back_sim: torch.Tensor  # (Nb, k)


def pair_nn(fa: torch.Tensor, fb: torch.Tensor, topk: int = 1) -> tuple[PairNN, PairNN]:
    """Both directions (A->B, B->A) from one similarity matmul."""
    sim = fa @ fb.T
    a_sim, a_idx = best(sim, topk, dim=0)  # for each B, best patches of A, best first
    b_sim, b_idx = best(sim, topk, dim=1)  # for each A, best patches of B
    back_a, back_a_sim = a_idx.T.contiguous(), a_sim.T.contiguous()
    return (
        PairNN(b_idx[:, 0], b_sim[:, 0], back_a, back_a_sim),  # the nearest is the first of the list
        PairNN(back_a[:, 0], back_a_sim[:, 0], b_idx, b_sim),
    )


def best(sim: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest along `dim`, best first. k=1 is a max: on the CPU
    ~8x cheaper than torch's top-k, whose cost hardly depends on k."""
    k = min(k, sim.shape[dim])
    if k == 1:
        return sim.max(dim=dim, keepdim=True)
    top = sim.topk(k, dim=dim)
    return top.values, top.indices


def backward_match(
    nn: PairNN, targets: torch.Tensor, allowed: torch.Tensor, fa: torch.Tensor, fb: torch.Tensor
) -> torch.Tensor:
    """For each target patch of B, its nearest patch of A among the `allowed` ones."""
    cand = nn.back_idx[targets]  # (T, k)
    ok = allowed[cand]
    first = ok.to(torch.uint8).argmax(dim=1)  # first allowed candidate (argmax takes the first max)
    out = cand.gather(1, first[:, None]).squeeze(1)
    miss = ~ok.any(dim=1)
    if miss.any():
        pool = allowed.nonzero().squeeze(1)
        out[miss] = pool[(fb[targets[miss]] @ fa[pool].T).argmax(dim=1)]
    return out


def cycle_hop(
    nn: PairNN,
    seeds: torch.Tensor,
    pos_a: torch.Tensor,
    fa: torch.Tensor,
    fb: torch.Tensor,
    radius: float,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-match `seeds` of A into B, match back among `allowed` (default: the seeds).

    Returns the targets in B, the cycle error (distance in `pos_a` units between a
    seed and where its target matches back) and the keep mask (error <= radius).
    """
    if allowed is None:
        allowed = torch.zeros(len(fa), dtype=torch.bool)
        allowed[seeds] = True
    targets = nn.fwd_idx[seeds]
    back = backward_match(nn, targets, allowed, fa, fb)
    err = (pos_a[back] - pos_a[seeds]).norm(dim=1)
    return targets, err, err <= radius


@dataclass
class Chains:
    idx: torch.Tensor  # (M, K) patch index in each image of the tuple, per surviving chain
    err: torch.Tensor  # (M, K-1) cycle error of each hop, in grid units of the hop's source
    survivors: list[int]  # chains alive after each hop, starting with image 0's patches


def chain(
    nns: list[PairNN], feats: list[torch.Tensor], pos: list[torch.Tensor], radius: float
) -> Chains:
    """Chain image 0's patches through the tuple; a chain dies at its first failed hop."""
    idx = torch.arange(len(feats[0]))[:, None]
    err = torch.zeros(len(idx), 0)
    survivors = [len(idx)]
    for k, nn in enumerate(nns):
        seeds, inverse = idx[:, -1].unique(return_inverse=True)
        targets, seed_err, keep = cycle_hop(nn, seeds, pos[k], feats[k], feats[k + 1], radius)
        alive = keep[inverse]
        idx = torch.cat([idx[alive], targets[inverse][alive, None]], dim=1)
        err = torch.cat([err[alive], seed_err[inverse][alive, None]], dim=1)
        survivors.append(len(idx))
    return Chains(idx, err, survivors)


@dataclass
class PairLabels:
    """Labels of one ordered image pair (i, j) of a tuple."""

    i: int
    j: int
    src: torch.Tensor  # (L,) patch index in image i
    tgt: torch.Tensor  # (L,) patch index in image j
    cycle_error: torch.Tensor  # (L,) worst hop error between i and j, pixels (best chain's)
    similarity: torch.Tensor  # (L,) cosine of the two patches


def merge_labels(src, tgt, cycle_error, similarity, n_tgt: int):
    """Merge repeated (src, tgt) labels: worst-case becomes best-case cycle error
    (the smallest seen), and `count` says how often the pair was found. `similarity`
    may be None (then so is the merged one)."""
    key = src * n_tgt + tgt
    uniq, inverse, count = key.unique(return_inverse=True, return_counts=True)
    cyc = torch.full((len(uniq),), float("inf")).scatter_reduce(0, inverse, cycle_error.float(), reduce="amin")
    sim = None if similarity is None else torch.zeros(len(uniq)).scatter(0, inverse, similarity.float())  # same patches, same cosine
    return uniq // n_tgt, uniq % n_tgt, cyc, sim, count


def pair_labels(chains: Chains, feats: list[torch.Tensor], hop_px: torch.Tensor) -> list[PairLabels]:
    """Every ordered pair of the tuple shares the chains' matches (composition).

    `hop_px` (K-1,) converts each hop's grid-unit cycle error to source pixels. The
    labels of (j, i) are those of (i, j) turned around, so each unordered pair is merged once.
    """
    k = chains.idx.shape[1]
    err_px = chains.err * hop_px[None, :]
    out = []
    for i in range(k):
        for j in range(i + 1, k):
            cyc = err_px[:, i:j].amax(dim=1)
            src, tgt, cyc, _, _ = merge_labels(chains.idx[:, i], chains.idx[:, j], cyc, None, len(feats[j]))
            sim = (feats[i][src] * feats[j][tgt]).sum(dim=1)  # once per distinct label
            out += [PairLabels(i, j, src, tgt, cyc, sim), PairLabels(j, i, tgt, src, cyc, sim)]
    return out
