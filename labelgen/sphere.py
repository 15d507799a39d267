"""Spherical maps (Spherical Maps, CVPR 2024; DIY-SC's filter): each foreground patch of an
image goes to a point on the unit sphere, so that the same part of different instances
lands on nearby points. A label survives when its two ends map within `labels.sphere_deg`.

The mapper is a linear layer, one transformer block over the image's patches and a
linear layer to 3-D, normalised (about 2M parameters at 768-d input). It learns from
features alone, with four losses:
- reconstruction: a category-conditioned prototype maps the sphere point back to the
  feature (so the sphere must keep what tells parts apart);
- relative distance: patches near in the image are nearer on the sphere than far ones
  (triplet, margin 0.5);
- orientation: a triangle of patches keeps its handedness on the sphere (no mirroring);
- viewpoint: the angle between two images' mean sphere directions equals their
  azimuth difference.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .models import SphereMapper


@dataclass
class SphereWeights:
    recon: float = 1.0  # reconstruction through the category prototype
    triplet: float = 1.0  # relative distance: image-near points are sphere-near
    orientation: float = 0.5  # keeps handedness (no mirroring)
    viewpoint: float = 0.5  # mean direction follows the azimuth gap


@dataclass
class SphereConf:
    dim: int = 384  # width of the mapper's transformer block
    heads: int = 6  # its attention heads
    steps: int = 300  # optimiser steps
    lr: float = 1e-3  # AdamW
    images_per_step: int = 8  # images per step (their foreground patches)
    margin: float = 0.5  # triplet margin (chord distance on the sphere)
    near_cells: float = 2.0  # positives lie within this many patches of the anchor
    far_cells: float = 6.0  # negatives lie at least this far
    samples: int = 256  # anchors / triangles per image and step
    weights: SphereWeights = field(default_factory=SphereWeights)
    seed: int = 0  # weights and sampling


default_conf = SphereConf


def angle_deg(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Angle between unit vectors (..., 3), degrees."""
    return torch.rad2deg(torch.arccos((p * q).sum(-1).clamp(-1.0, 1.0)))


def reconstruction_loss(mapper: SphereMapper, points, feats, category, valid) -> torch.Tensor:
    recon = F.normalize(mapper.reconstruct(points, category), dim=-1)
    return (1 - (recon * F.normalize(feats, dim=-1)).sum(-1))[valid].mean()


def triplet_loss(points, grid, valid, conf, gen) -> torch.Tensor:
    """Image-near patches must be sphere-nearer than image-far ones by `margin` (chord)."""
    losses = []
    for p, g, v in zip(points, grid, valid):
        p, g = p[v], g[v]
        d_img = torch.cdist(g, g)
        a = torch.randint(len(p), (conf.samples,), generator=gen)
        near = (d_img[a] <= conf.near_cells) & (d_img[a] > 0)
        far = d_img[a] >= conf.far_cells
        ok = near.any(1) & far.any(1)
        if not ok.any():
            continue
        a, near, far = a[ok], near[ok], far[ok]
        pos = torch.multinomial(near.float(), 1, generator=gen)[:, 0]
        neg = torch.multinomial(far.float(), 1, generator=gen)[:, 0]
        d_pos, d_neg = (p[a] - p[pos]).norm(dim=-1), (p[a] - p[neg]).norm(dim=-1)
        losses.append(F.relu(d_pos - d_neg + conf.margin).mean())
    return torch.stack(losses).mean() if losses else points.sum() * 0


def orientation_loss(points, grid, valid, conf, gen, min_area: float = 2.0) -> torch.Tensor:
    """Triangles of patches keep their orientation: the sign of the image-plane cross
    product must match the sign of det[pa, pb, pc] on the sphere."""
    losses = []
    for p, g, v in zip(points, grid, valid):
        p, g = p[v], g[v]
        idx = torch.randint(len(p), (conf.samples, 3), generator=gen)
        ga, gb, gc = g[idx[:, 0]], g[idx[:, 1]], g[idx[:, 2]]
        cross = (gb - ga)[:, 0] * (gc - ga)[:, 1] - (gb - ga)[:, 1] * (gc - ga)[:, 0]
        keep = cross.abs() >= min_area
        if not keep.any():
            continue
        pa, pb, pc = p[idx[keep, 0]], p[idx[keep, 1]], p[idx[keep, 2]]
        det = (pa * torch.cross(pb, pc, dim=-1)).sum(-1)
        losses.append(F.relu(-torch.sign(cross[keep]) * det).mean())
    return torch.stack(losses).mean() if losses else points.sum() * 0


def viewpoint_loss(points, valid, azimuth, category) -> torch.Tensor:
    """The angle between two images' mean sphere directions equals their azimuth gap
    (same category, both azimuths known); radians, squared."""
    mean = F.normalize((points * valid[..., None]).sum(1), dim=-1)
    gap = torch.deg2rad(((azimuth[:, None] - azimuth[None, :] + 540) % 360 - 180).abs())
    ok = (category[:, None] == category[None, :]) & ~torch.isnan(gap)
    ok &= ~torch.eye(len(mean), dtype=torch.bool)
    if not ok.any():
        return points.sum() * 0
    ang = torch.arccos((mean[:, None] * mean[None, :]).sum(-1).clamp(-1 + 1e-6, 1 - 1e-6))
    return ((ang - gap)[ok] ** 2).mean()


def batch_of(images: list[dict], device="cpu"):
    """Pad images' foreground patches into (B, N, C) features, (B, N, 2) grid, (B, N) valid."""
    n = max(len(im["feats"]) for im in images)
    c = images[0]["feats"].shape[1]
    feats = torch.zeros(len(images), n, c, device=device)
    grid = torch.zeros(len(images), n, 2, device=device)
    valid = torch.zeros(len(images), n, dtype=torch.bool, device=device)
    for i, im in enumerate(images):
        k = len(im["feats"])
        feats[i, :k], grid[i, :k], valid[i, :k] = im["feats"], im["grid"], True
    return feats, grid, valid


def train_mapper(images: list[dict], conf, log=None) -> tuple[SphereMapper, list[dict]]:
    """Fit a mapper to images: dicts with feats (N, C), grid (N, 2), category, azimuth (deg or nan).
    Returns the mapper and the loss history (one dict per logged step)."""
    torch.manual_seed(conf.seed)
    gen = torch.Generator().manual_seed(conf.seed)
    categories = sorted({im["category"] for im in images})
    mapper = SphereMapper(images[0]["feats"].shape[1], categories, conf.dim, conf.heads)
    opt = torch.optim.AdamW(mapper.parameters(), lr=conf.lr)
    rng = np.random.default_rng(conf.seed)
    w, history = conf.weights, []
    for step in range(conf.steps):
        pick = [images[i] for i in rng.choice(len(images), size=min(conf.images_per_step, len(images)), replace=False)]
        feats, grid, valid = batch_of(pick)
        cat = torch.tensor([categories.index(im["category"]) for im in pick])
        az = torch.tensor([float(im["azimuth"]) for im in pick])
        points = mapper(feats, ~valid)
        parts = {
            "recon": reconstruction_loss(mapper, points, feats, cat, valid),
            "triplet": triplet_loss(points, grid, valid, conf, gen),
            "orientation": orientation_loss(points, grid, valid, conf, gen),
            "viewpoint": viewpoint_loss(points, valid, az, cat),
        }
        loss = sum(w[k] * v for k, v in parts.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == conf.steps - 1:
            history.append({"step": step + 1, "loss": loss.item(), **{k: v.item() for k, v in parts.items()}})
            if log:
                log(history[-1])
    return mapper.eval(), history


@torch.inference_mode()
def map_image(mapper: SphereMapper, feats: torch.Tensor) -> torch.Tensor:
    """(N, C) foreground features of one image -> (N, 3) sphere points."""
    return mapper(feats[None])[0]
