"""Candidate labels of a chunk of tuples, the map side of a label run (labelgen.vote is the
reduce side), and the spherical check.

A chunk of tuples shares the nearest neighbours of its image pairs (`chain.Neighbours`), so a
pair that recurs across the chunk is matched once; every ordered pair of each tuple within
the pose-gap cap gets the chains' matches as candidates, and `support` counts the tuples
that proposed each one. What the vote's checks buy is measured in the README (Precision
against truth).
"""

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from .chain import Neighbours, Patches, chain, compose
from .features import ImageFeatures
from .geometry import geodesic_deg
from .store.schema import LABEL_SCHEMA


@dataclass
class ConfidenceConf:
    """Logistic weights of P(label within 0.10 of the box side) on the stored signals; fitted on
    dev (labelgen.calibrate)."""

    bias: float = 0.666  # the logit of a label with every signal at 0
    log_support: float = 0.052  # log of the tuples that proposed the label
    similarity: float = 1.049  # cosine
    cycle_error: float = -0.008  # pixels
    pair_error: float = 0.103  # patches
    hops: float = 0.455  # chain distance
    pose_gap: float = -0.045  # degrees; 0 where the pose is unknown


@dataclass
class LabelsConf:
    radius: float = 2.0  # relaxed cycle check: back-match within this many patches
    topk: int = 1  # backward candidates kept per patch and pair (exact fallback beyond; 1 = a max, fastest on CPUs)
    features: str = "backbone"  # chain on: backbone, or an adapter's refined features: promoted | latest | <model_id>
    tuples_per_task: int = 256  # tuples chained per Ray task
    vote_tuples: int = 1024  # tuples per vote partition: a category's vote runs as parallel tasks, each over the
    # candidates of about this many tuples' worth of source images, so its memory does not grow with the category
    vote: bool = True  # keep, per source patch and image pair, the target most tuples agree on
    min_support: int = 1  # tuples that must propose a label
    pair_radius: float | None = 1.0  # co-visibility: after the vote, keep labels whose target's direct nearest
    # neighbour back in the source lies within this many patches (null: off)
    max_gap_deg: float | None = 90.0  # co-visibility: no labels between views whose poses differ by more (degrees of
    # rotation; null: no cap)
    confidence: ConfidenceConf = field(default_factory=ConfidenceConf)
    keep: float | None = 0.14  # keep each source image's most confident labels, this many per foreground patch of each
    # image pair examined from it (a share, so it holds when the features and their similarity scale change; chosen
    # on dev: 20% of co-visible patches); null: all
    sphere: str = "none"  # spherical filter (keeps labels whose ends map within sphere_deg): auto (a mapper registered
    # for these features and categories, else one fitted to them first, with sphere.*) | latest | an id | none
    sphere_deg: float = 27.0  # 0.15 * pi


default_conf = LabelsConf


@dataclass
class Foreground:
    """An image's foreground patches, ready for matching."""

    feats: torch.Tensor  # (N, C)
    grid: torch.Tensor  # (N, 2) grid (col, row)
    pixels: torch.Tensor  # (N, 2) original pixels
    cell_px: float
    size: tuple[int, int]  # original (width, height)

    @classmethod
    def of(cls, f: ImageFeatures) -> "Foreground":
        idx = f.fg_index()
        grid = f.cell_xy(idx)
        return cls(f.fg_feats().contiguous(), grid, f.to_pixels(grid), f.cell_px, (f.width, f.height))


def candidates(
    run_id: str,
    category: str,
    tuples: list[tuple[str, ...]],
    features: dict[str, ImageFeatures],
    conf,
    rotations: dict[str, np.ndarray] | None = None,
    device: str = "cpu",
):
    """Chain every tuple of the chunk; return candidate label rows and counts per stage.
    Composed labels are made only between views within the pose-gap cap (`rotations`:
    image -> 3x3, where known) and carry how far the pair's own direct match back lands.
    The matching runs on `device` (the same torch code on a GPU)."""
    ids = sorted(features)
    fgs = [Foreground.of(features[i]) for i in ids]
    k = len(tuples[0]) if tuples else 0
    at = {i: n for n, i in enumerate(ids)}
    tuples_t = torch.tensor([[at[i] for i in t] for t in tuples], dtype=torch.long).reshape(len(tuples), k)
    sizes = torch.tensor([len(f.feats) for f in fgs], dtype=torch.long)
    full = (sizes[tuples_t] > 0).all(dim=1) if k else torch.zeros(0, dtype=torch.bool)
    stats = {
        "tuples": len(tuples),
        "tuples_empty": int((~full).sum()),
        "seeds": 0,
        **{f"after_hop{h}": 0 for h in range(1, k)},
        "composed": 0,
        "candidates": 0,
    }
    tuples_t = tuples_t[full]
    if not len(tuples_t):
        return to_table(run_id, category, ids, None), stats
    patches = Patches.cat([f.feats.to(device) for f in fgs], [f.grid.to(device) for f in fgs])
    tuples_t = tuples_t.to(device)
    # every pair of positions: adjacent ones chain, all are checked for co-visibility (pair_error)
    i, j = torch.triu_indices(k, k, offset=1)
    pairs = torch.stack([tuples_t[:, i], tuples_t[:, j]], dim=2).reshape(-1, 2).unique(dim=0)
    nn = Neighbours(patches, [tuple(p) for p in pairs.tolist()], conf.topk)
    ch = chain(tuples_t, patches, nn, conf.radius)
    for h, n in enumerate(ch.survivors):
        stats["seeds" if h == 0 else f"after_hop{h}"] = n
    cell_px = torch.tensor([f.cell_px for f in fgs], device=device)
    one_way = compose(ch, len(patches.feats), cell_px[tuples_t[ch.tuple, :-1]])
    sim = similarity(patches.feats, one_way.src, one_way.tgt)
    src, tgt = torch.cat([one_way.src, one_way.tgt]), torch.cat([one_way.tgt, one_way.src])
    image = patches.image
    a, b = image[src], image[tgt]
    stats["composed"] = len(src)
    gap = torch.from_numpy(gap_matrix(ids, rotations)).to(device)[a, b]
    keep = ~(gap > conf.max_gap_deg + 1e-3) if conf.max_gap_deg is not None else torch.ones_like(src, dtype=torch.bool)
    src, tgt, a, b = src[keep], tgt[keep], a[keep], b[keep]
    pixels = torch.cat([f.pixels for f in fgs]).to(device)
    cols = {
        "src": a,
        "tgt": b,
        "src_xy": pixels[src],
        "tgt_xy": pixels[tgt],
        "hops": one_way.hops.repeat(2)[keep],
        "cycle_error": one_way.cycle_error.repeat(2)[keep],
        "similarity": sim.repeat(2)[keep],
        "support": one_way.support.repeat(2)[keep],
        "pair_error": pair_error(nn, patches, a, b, src, tgt),
        "pose_gap": gap[keep],
    }
    table = to_table(run_id, category, ids, cols)
    stats["candidates"] = table.num_rows
    return table, stats


def similarity(feats: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor, block: int = 2048) -> torch.Tensor:
    """Cosine of each label's two patches, in cache-sized blocks (a gather of both ends is L x C)."""
    return torch.cat(
        [(feats[src[s : s + block]] * feats[tgt[s : s + block]]).sum(dim=1) for s in range(0, len(src), block)]
        or [feats.new_zeros(0)]
    )


def gap_matrix(ids: list[str], rotations: dict[str, np.ndarray] | None) -> np.ndarray:
    """(n, n) degrees of rotation between the views; NaN where a pose is unknown (no cap applies)."""
    known = np.array([bool(rotations) and i in rotations for i in ids])
    out = np.full((len(ids), len(ids)), np.nan, dtype=np.float32)
    if known.any():
        rot = np.stack([rotations[i] for i, k in zip(ids, known) if k])
        out[np.ix_(known, known)] = geodesic_deg(rot)
    return out


def pose_gap(rotations: dict[str, np.ndarray] | None, a: str, b: str) -> float | None:
    """Degrees of rotation between two views; None where a pose is unknown."""
    gap = float(gap_matrix([a, b], rotations)[0, 1])
    return None if np.isnan(gap) else gap


def pair_error(
    nn: Neighbours, patches: Patches, a: torch.Tensor, b: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor
) -> torch.Tensor:
    """Patches between each label's source and the direct nearest neighbour of its target
    back in the source image: a composed label whose pair disagrees points from a part the
    target does not show."""
    return (patches.grid[nn(b, a, tgt)[:, 0]] - patches.grid[src]).float().norm(dim=1)


def to_table(run_id: str, category: str, ids: list[str], cols: dict | None) -> pa.Table:
    """Label rows of the chunk's images `ids` (`cols`: image and patch columns, None: no rows)."""
    if cols is None:
        return LABEL_SCHEMA.empty_table()
    n, names = len(cols["src"]), pa.array(ids, pa.string())
    data = {
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "category": pa.repeat(pa.scalar(category, pa.string()), n),
        "src_image_id": names.take(cols["src"].cpu().numpy()),
        "tgt_image_id": names.take(cols["tgt"].cpu().numpy()),
        "src_x": cols["src_xy"][:, 0].cpu().numpy(),
        "src_y": cols["src_xy"][:, 1].cpu().numpy(),
        "tgt_x": cols["tgt_xy"][:, 0].cpu().numpy(),
        "tgt_y": cols["tgt_xy"][:, 1].cpu().numpy(),
        **{c: cols[c].cpu().numpy() for c in ("hops", "cycle_error", "similarity", "support", "pair_error")},
        "pose_gap": pa.array(cols["pose_gap"].cpu().numpy(), pa.float32(), from_pandas=True),  # nan: no pose
        "sphere_angle": pa.nulls(n, pa.float32()),
        "confidence": pa.nulls(n, pa.float32()),
    }
    return pa.table({name: data[name] for name in LABEL_SCHEMA.names}, schema=LABEL_SCHEMA)


def patch_index(fg: Foreground, xy_px: np.ndarray) -> np.ndarray:
    """Index into the image's foreground patches of label pixels (patch centres)."""
    grid = np.rint(xy_px / fg.cell_px - 0.5).astype(np.int64)
    keys = fg.grid[:, 1].long().numpy() * 1_000_000 + fg.grid[:, 0].long().numpy()  # row-major: sorted
    want = grid[:, 1] * 1_000_000 + grid[:, 0]
    idx = np.searchsorted(keys, want)
    if len(keys) == 0 or (idx >= len(keys)).any() or (keys[np.minimum(idx, len(keys) - 1)] != want).any():
        raise ValueError("a label does not sit on a foreground patch centre of its image")
    return idx


def sphere_angles(table: pa.Table, fgs: dict[str, Foreground], points: dict[str, torch.Tensor]) -> np.ndarray:
    """Angle (degrees) between the sphere points of each label's two ends."""
    out = np.zeros(table.num_rows, dtype=np.float32)
    frame = table.select(["src_image_id", "tgt_image_id", "src_x", "src_y", "tgt_x", "tgt_y"]).to_pandas()
    for (a, b), g in frame.groupby(["src_image_id", "tgt_image_id"]):
        i = patch_index(fgs[a], g[["src_x", "src_y"]].to_numpy())
        j = patch_index(fgs[b], g[["tgt_x", "tgt_y"]].to_numpy())
        cos = (points[a][i] * points[b][j]).sum(-1).clamp(-1, 1)
        out[g.index.to_numpy()] = np.degrees(np.arccos(cos.numpy()))
    return out


def sphere_filter(table: pa.Table, fgs, points, threshold_deg: float) -> pa.Table:
    """Fill sphere_angle and keep the labels within the threshold."""
    angles = sphere_angles(table, fgs, points)
    table = table.set_column(
        table.schema.get_field_index("sphere_angle"), "sphere_angle", pa.array(angles, pa.float32())
    )
    return table.filter(pa.array(angles <= threshold_deg))
