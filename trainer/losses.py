"""Losses on labelled points of one image pair: sparse CLIP and dense soft-argmax EPE."""

import torch
import torch.nn.functional as F


def sample(feats: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """(P, h, w) features at (L, 2) grid coordinates (col, row), bilinear -> (L, P)."""
    h, w = feats.shape[-2:]
    grid = torch.stack([2 * (xy[:, 0] + 0.5) / w - 1, 2 * (xy[:, 1] + 0.5) / h - 1], dim=1)
    out = F.grid_sample(feats[None], grid[None, :, None], mode="bilinear", align_corners=False)
    return F.normalize(out[0, :, :, 0].T, dim=1)


def clip_loss(src: torch.Tensor, tgt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy: each labelled source point picks its own target among the pair's."""
    logits = logit_scale.exp() * src @ tgt.T
    target = torch.arange(len(src), device=src.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def soft_argmax(query: torch.Tensor, feats: torch.Tensor, temperature: float = 0.02) -> torch.Tensor:
    """Expected grid position (L, 2) of each (L, P) query over the whole (P, h, w) target."""
    h, w = feats.shape[-2:]
    prob = (query @ feats.flatten(1) / temperature).softmax(dim=1)
    ys, xs = torch.meshgrid(torch.arange(h, device=feats.device), torch.arange(w, device=feats.device), indexing="ij")
    cells = torch.stack([xs.flatten(), ys.flatten()], dim=1).to(query.dtype)
    return prob @ cells


def dense_loss(
    src: torch.Tensor, tgt_feats: torch.Tensor, tgt_xy: torch.Tensor, temperature: float = 0.02, noise: float = 0.0
) -> torch.Tensor:
    """Mean end-point error (grid units) of the soft-argmax against the labels (+ Gaussian noise)."""
    if noise:
        tgt_xy = tgt_xy + noise * torch.randn_like(tgt_xy)
    return (soft_argmax(src, tgt_feats, temperature) - tgt_xy).norm(dim=1).mean()


def window_soft_argmax(query: torch.Tensor, feats: torch.Tensor, window: int = 7, temperature: float = 0.02):
    """Inference: the argmax cell, then a soft-argmax inside its (2w+1)^2 window -> (L, 2)."""
    h, w = feats.shape[-2:]
    sim = query @ feats.flatten(1)  # (L, h*w)
    best = sim.argmax(dim=1)
    by, bx = best // w, best % w
    ys, xs = torch.meshgrid(torch.arange(h, device=feats.device), torch.arange(w, device=feats.device), indexing="ij")
    ys, xs = ys.flatten()[None], xs.flatten()[None]
    inside = ((ys - by[:, None]).abs() <= window) & ((xs - bx[:, None]).abs() <= window)
    prob = (sim / temperature).masked_fill(~inside, float("-inf")).softmax(dim=1)
    return torch.stack([(prob * xs).sum(1), (prob * ys).sum(1)], dim=1)
