"""Pinhole geometry of a photo seen as a rotated plane: the demo's ground truth."""

import numpy as np


def rotation(azimuth_deg: float, elevation_deg: float, theta_deg: float = 0.0) -> np.ndarray:
    """Object rotation: azimuth about the vertical (y) axis, then elevation about x,
    then the in-plane angle theta about the viewing axis (z)."""
    a, e, t = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg), np.deg2rad(theta_deg)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
    rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    return rz @ rx @ ry


def geodesic_deg(rotations: np.ndarray) -> np.ndarray:
    """(N, N) angles in degrees between (N, 3, 3) rotations: arccos((tr(Ri^T Rj) - 1) / 2)."""
    trace = np.einsum("iab,jab->ij", rotations, rotations)
    return np.rad2deg(np.arccos(np.clip((trace - 1) / 2, -1.0, 1.0)))


def plane_homography(
    photo_size: tuple[int, int],
    azimuth_deg: float,
    elevation_deg: float,
    focal: float,
    principal: tuple[float, float],
    *,
    theta_deg: float = 0.0,
    distance: float = 1.5,
) -> np.ndarray:
    """3x3 map from photo pixels (u, v) to view pixels (x, y).

    The photo is a plane of unit width (longer side) centred at the origin,
    rotated by (azimuth, elevation, in-plane theta) and seen from `distance` along +z.
    """
    w, h = photo_size
    s = 1.0 / max(w, h)
    photo_to_plane = np.array([[s, 0, -s * w / 2], [0, s, -s * h / 2], [0, 0, 1]])
    r = rotation(azimuth_deg, elevation_deg, theta_deg)
    extrinsic = np.stack([r[:, 0], r[:, 1], np.array([0.0, 0.0, distance])], axis=1)
    intrinsic = np.array([[focal, 0, principal[0]], [0, focal, principal[1]], [0, 0, 1]])
    hom = intrinsic @ extrinsic @ photo_to_plane
    return hom / hom[2, 2]


def apply_homography(hom: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 3x3 homography, or each through its own (N, 3, 3) one."""
    pts = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    pts = (hom @ pts[..., None])[..., 0]
    return pts[:, :2] / pts[:, 2:3]


def transfer(hom_src: np.ndarray, hom_tgt: np.ndarray, points: np.ndarray) -> np.ndarray:
    """True position in the target view of (N, 2) pixels of the source view.
    The homographies are (3, 3), or (N, 3, 3): one pair per point."""
    return apply_homography(hom_tgt @ np.linalg.inv(hom_src), points)
