"""A viewpoint head over the backbone's cached features: the fallback that needs no extra
weights and no truth at run time.

It learns azimuth (a distribution over bins), elevation and in-plane theta from posed
images (the posed part of a manifest, or the built-in rendered collection's dev split)
and predicts them for unposed ones. Its input keeps the object's layout, which a global
mean would lose: the foreground cells cropped to their box and pooled to a `cells` x
`cells` grid, with each bin's foreground share. Every image also gives its mirror for
free: the mirrored view of a bilaterally symmetric object is the view at minus the
azimuth and minus the roll. Training uses both; prediction multiplies the image's
azimuth distribution with its mirror's, reflected, and takes the confidence from the
product (the probability mass within one bin of its peak).
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..features import ImageFeatures


@dataclass
class HeadConf:
    cells: int = 4  # the foreground box pooled to cells x cells bins
    bins: int = 36  # azimuth bins over the circle
    width: int = 32  # channels per bin after the shared projection
    hidden: int = 128  # the MLP's hidden units
    dropout: float = 0.3  # on the pooled layout and the hidden units: a few hundred posed images are little
    steps: int = 400  # AdamW steps
    batch: int = 256  # views per step (a random draw): the cost does not grow with the posed images
    lr: float = 3e-3  # one-cycle peak
    weight_decay: float = 1e-2  # AdamW
    label_sigma: float = 1.0  # azimuth targets: a wrapped Gaussian this many bins wide
    seed: int = 0  # initialisation and batches


default_conf = HeadConf


def layout(f: ImageFeatures, cells: int) -> torch.Tensor | None:
    """(cells * cells, C + 1): the foreground's features pooled over a cells x cells grid of
    its bounding box (mean of each bin's foreground cells) and each bin's foreground share;
    None without foreground."""
    fg = f.fg
    if not fg.any():
        return None
    rows, cols = fg.any(1).nonzero().squeeze(1), fg.any(0).nonzero().squeeze(1)
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    grid = f.grid()[r0:r1, c0:c1].float() * fg[r0:r1, c0:c1, None]
    mask = fg[r0:r1, c0:c1].float()
    size = (max(cells, r1 - r0), max(cells, c1 - c0))  # small boxes are upsampled first: every bin sees a cell
    grid = F.interpolate(grid.permute(2, 0, 1)[None], size=size, mode="nearest")[0]
    mask = F.interpolate(mask[None, None], size=size, mode="nearest")[0]
    sums, share = F.adaptive_avg_pool2d(grid, cells), F.adaptive_avg_pool2d(mask, cells)
    feats = F.normalize(sums / share.clamp_min(1e-6), dim=0) * (share > 0)
    return torch.cat([feats, share]).flatten(1).T


class ViewpointHead(nn.Module):
    """Pooled layout -> azimuth logits over `bins`, elevation and theta (degrees)."""

    def __init__(self, dim: int, cells: int = 4, bins: int = 36, width: int = 32, hidden: int = 128, dropout=0.3):
        super().__init__()
        self.dim, self.cells, self.bins = dim, cells, bins
        self.project = nn.Linear(dim + 1, width)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(cells * cells * width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, bins + 2),
        )

    def config(self) -> dict:
        return {
            "dim": self.dim,
            "cells": self.cells,
            "bins": self.bins,
            "width": self.project.out_features,
            "hidden": self.mlp[1].out_features,
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.mlp(F.relu(self.project(x)).flatten(1))
        return out[:, : self.bins], out[:, self.bins] * 30.0, out[:, self.bins + 1] * 30.0


def wrapped_targets(azimuth: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """(N, bins) soft targets: a wrapped Gaussian around each azimuth (degrees), sigma in bins."""
    centre = (azimuth % 360.0) / (360.0 / bins)
    d = torch.arange(bins, dtype=torch.float32)[None] + 0.5 - centre[:, None]
    d = torch.remainder(d + bins / 2, bins) - bins / 2
    w = torch.exp(-0.5 * (d / sigma) ** 2)
    return w / w.sum(1, keepdim=True)


@contextmanager
def one_thread():
    """The head is small: one thread runs it fastest, and several stall when the cores are
    busy (2 threads beside a feature actor: 23x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@one_thread()
def train_head(views: list[torch.Tensor], poses: np.ndarray, conf, log=None) -> ViewpointHead:
    """Fit a head to layouts `views` (each (cells^2, C + 1)) with poses (N, 3): azimuth,
    elevation, theta in degrees. The caller passes each image's mirror as its own view
    (azimuth and theta negated)."""
    torch.manual_seed(conf.seed)
    x = torch.stack(views).float()
    pose = torch.as_tensor(poses, dtype=torch.float32)
    head = ViewpointHead(x.shape[2] - 1, conf.cells, conf.bins, conf.width, conf.hidden, conf.dropout)
    target = wrapped_targets(pose[:, 0], conf.bins, conf.label_sigma)
    opt = torch.optim.AdamW(head.parameters(), lr=conf.lr, weight_decay=conf.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, conf.lr, total_steps=conf.steps)
    head.train()
    gen = torch.Generator().manual_seed(conf.seed)
    for step in range(1, conf.steps + 1):
        b = torch.randint(len(x), (min(conf.batch, len(x)),), generator=gen)
        logits, elevation, theta = head(x[b])
        loss_az = -(target[b] * F.log_softmax(logits, 1)).sum(1).mean()
        loss_angles = F.smooth_l1_loss(elevation, pose[b, 1], beta=5.0) + F.smooth_l1_loss(theta, pose[b, 2], beta=5.0)
        loss = loss_az + loss_angles / 30.0
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log:
            log({"step": step, "loss": float(loss), "azimuth": float(loss_az), "angles": float(loss_angles)})
    return head.eval()


@one_thread()
@torch.inference_mode()
def predict(head: ViewpointHead, views: torch.Tensor, flipped: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Poses of images from their layouts and, where cached, their mirrors' (both (N, cells^2,
    C + 1)): azimuth (degrees, -180..180), elevation, theta, confidence (the azimuth
    probability within one bin of the peak) and spread (the azimuth distribution's circular
    standard deviation, degrees)."""
    logits, elevation, theta = head(views.float())
    log_p = F.log_softmax(logits, 1)
    if flipped is not None:
        m_logits, m_elevation, m_theta = head(flipped.float())
        # the mirror's bin b (centre (b + 0.5) w) is the image's azimuth -(b + 0.5) w: bin bins - 1 - b
        log_p = log_p + F.log_softmax(m_logits, 1).flip(1)
        elevation, theta = (elevation + m_elevation) / 2, (theta - m_theta) / 2
    p = torch.softmax(log_p, 1)
    bins = head.bins
    near = torch.stack([(p.argmax(1) + d) % bins for d in (-1, 0, 1)], 1)
    w = p.gather(1, near)
    centres = (torch.arange(bins, dtype=torch.float32) + 0.5) * (2 * math.pi / bins)
    ang = centres[near]  # the azimuth: the circular mean of the peak's window, finer than a bin
    azimuth = torch.atan2((w * ang.sin()).sum(1), (w * ang.cos()).sum(1))
    resultant = torch.sqrt((p * centres.cos()).sum(1) ** 2 + (p * centres.sin()).sum(1) ** 2).clamp(1e-6, 1.0)
    out = {
        "azimuth": (torch.rad2deg(azimuth) + 180.0) % 360.0 - 180.0,
        "elevation": elevation,
        "theta": theta,
        "confidence": w.sum(1),
        "spread": torch.rad2deg(torch.sqrt(-2 * torch.log(resultant))),
    }
    return {k: v.numpy().astype(np.float64) for k, v in out.items()}
