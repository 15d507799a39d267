"""Part-level truth of rendered views: where a source point truly lands in a target view.

A view's truth file holds per pixel the part id (0: background), the canonical
coordinate on that part (synthetic.shapes) and the camera depth, plus the camera and
where each part of the instance sits. The same part and canonical coordinate is the
same semantic point on every instance, so a source pixel's point is placed on the
target's part, projected with the target's camera, and depth-tested: visible when
nothing of the target lies in front of it. Twin parts (left/right) share canonical
coordinates: a label that lands on the twin of its source part is a mirror error.
"""

import io as _io
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from .io import read_bytes
from .metrics import relative_error, within

DEPTH_SLACK = 0.01  # relative: a point no deeper than the depth buffer by this much is the visible surface


@dataclass
class PartTruth:
    part: np.ndarray  # (H, W) uint8
    coord: np.ndarray  # (H, W, 3) float16 as stored (float32 where made in memory)
    depth: np.ndarray  # (H, W) float32, inf on the background
    R: np.ndarray  # (3, 3) camera = R @ object + t
    t: np.ndarray  # (3,)
    intrinsics: np.ndarray  # focal, cx, cy
    affine: np.ndarray  # (P + 1, 3, 3) per part id: object point = affine @ canonical + centre (nan: no such part)
    centre: np.ndarray  # (P + 1, 3)
    twin: np.ndarray  # (P + 1,) per part id: its left/right twin's id (0: a central part)

    @classmethod
    def load(cls, uri: str) -> "PartTruth":
        data = np.load(_io.BytesIO(read_bytes(uri)))
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def box(self) -> np.ndarray:
        """The object's bounding box (x1, y1, x2, y2), pixels; nan without an object."""
        rows, cols = np.nonzero(self.part)
        if not len(rows):
            return np.full(4, np.nan)
        return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=float)

    @cached_property
    def box_side(self) -> float:
        """The longer side of the object's bounding box, pixels (SPair's PCK unit)."""
        x1, y1, x2, y2 = self.box()
        return float(max(x2 - x1, y2 - y1))

    def at(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Part id, canonical coordinate, pixel column and row at (N, 2) positions (x, y)."""
        h, w = self.part.shape
        col = np.clip(np.floor(xy[:, 0]).astype(int), 0, w - 1)
        row = np.clip(np.floor(xy[:, 1]).astype(int), 0, h - 1)
        return self.part[row, col], self.coord[row, col].astype(np.float32), col, row

    def project(self, part: np.ndarray, coord: np.ndarray) -> np.ndarray:
        """(N, 3): pixel x, y and camera depth of canonical points on this view's parts (nan
        where the instance has no such part)."""
        points = np.einsum("nij,nj->ni", self.affine[part], coord) + self.centre[part]
        cam = points @ self.R.T + self.t
        f, cx, cy = self.intrinsics
        return np.stack([f * cam[:, 0] / cam[:, 2] + cx, f * cam[:, 1] / cam[:, 2] + cy, cam[:, 2]], 1)


@lru_cache(maxsize=512)
def load_truth(uri: str) -> PartTruth:
    """A view's truth, recently read ones kept (a label table visits each view many times;
    about 1 MB each at 320 px)."""
    return PartTruth.load(uri)


def true_targets(src: PartTruth, tgt: PartTruth, xy: np.ndarray):
    """For (N, 2) source pixels: the true target positions (N, 2) (nan off the object or
    where the target lacks the part), whether the point is visible in the target (N,), and
    the source part ids (N,)."""
    part, coord, _, _ = src.at(xy)
    out = tgt.project(part, coord)
    out[part == 0] = np.nan
    h, w = tgt.part.shape
    inside = (out[:, 0] >= 0) & (out[:, 0] < w) & (out[:, 1] >= 0) & (out[:, 1] < h)
    landed, _, col, row = tgt.at(np.nan_to_num(out[:, :2]))
    visible = inside & (landed == part) & (out[:, 2] <= tgt.depth[row, col] * (1 + DEPTH_SLACK))
    return out[:, :2], visible, part


def judge(src: PartTruth, tgt: PartTruth, src_xy: np.ndarray, tgt_xy: np.ndarray, alphas=(0.05, 0.10)) -> dict:
    """Per label: its error in target box sides (nan where the source point is not visible
    in the target); correct at each alpha; source hidden in the target (on the object but
    not visible); from a twin part; landed on that twin."""
    truth, visible, part = true_targets(src, tgt, src_xy)
    error = np.where(visible, relative_error(tgt_xy, truth, tgt.box_side), np.nan)
    landed, _, _, _ = tgt.at(tgt_xy)
    twin = src.twin[part]
    return {
        "error": error,
        "correct": within(error, alphas),
        "hidden": (part > 0) & ~visible,
        "twin_part": twin > 0,
        "mirrored": (twin > 0) & (landed == twin),
    }
