"""Unit primitives as triangle meshes, and parts: a primitive placed in an object.

Every vertex carries its position on the unit primitive. That position is the
part's canonical coordinate: two instances of a category differ by how their
parts are scaled, turned and placed, so the same canonical coordinate on the same
part is the same semantic point on both. A right-hand twin is the left one seen in
a mirror (x -> -x), so twin points share their canonical coordinate.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """A unit primitive: (V, 3) positions (= canonical coordinates), (V, 3) normals,
    (V, 2) texture coordinates, (T, 3) triangle vertex indices."""

    pos: np.ndarray
    normal: np.ndarray
    uv: np.ndarray
    tri: np.ndarray


def _grid(nu: int, nv: int) -> np.ndarray:
    """Two triangles per cell of an nu x nv vertex grid (row-major)."""
    i, j = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
    a = (i * nv + j).ravel()
    b, c, d = a + nv, a + 1, a + nv + 1
    return np.concatenate([np.stack([a, b, c], 1), np.stack([c, b, d], 1)])


def _concat(meshes: list[Mesh]) -> Mesh:
    offsets = np.cumsum([0] + [len(m.pos) for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.pos for m in meshes]),
        np.concatenate([m.normal for m in meshes]),
        np.concatenate([m.uv for m in meshes]),
        np.concatenate([m.tri + o for m, o in zip(meshes, offsets)]),
    )


def sphere(n_lat: int = 16, n_lon: int = 32) -> Mesh:
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat)
    lon = np.linspace(0, 2 * np.pi, n_lon)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    pos = np.stack([np.cos(la) * np.cos(lo), np.sin(la), np.cos(la) * np.sin(lo)], -1).reshape(-1, 3)
    uv = np.stack([lo / (2 * np.pi), la / np.pi + 0.5], -1).reshape(-1, 2)
    return Mesh(pos, pos.copy(), uv, _grid(n_lat, n_lon))


def _disk(y: float, n: int, radius: float = 1.0) -> Mesh:
    """A cap at height y facing away from the centre."""
    lo = np.linspace(0, 2 * np.pi, n)
    r = np.linspace(0, radius, 4)
    rr, ll = np.meshgrid(r, lo, indexing="ij")
    pos = np.stack([rr * np.cos(ll), np.full_like(rr, y), rr * np.sin(ll)], -1).reshape(-1, 3)
    normal = np.tile([0.0, np.sign(y), 0.0], (len(pos), 1))
    uv = np.stack([0.5 + 0.5 * pos[:, 0], 0.5 + 0.5 * pos[:, 2]], -1)
    return Mesh(pos, normal, uv, _grid(4, n))


def cylinder(n: int = 32, rows: int = 8) -> Mesh:
    """Radius 1 about the y axis, y in [-1, 1], with caps."""
    lo = np.linspace(0, 2 * np.pi, n)
    y = np.linspace(-1, 1, rows)
    yy, ll = np.meshgrid(y, lo, indexing="ij")
    pos = np.stack([np.cos(ll), yy, np.sin(ll)], -1).reshape(-1, 3)
    normal = pos * np.array([1.0, 0.0, 1.0])
    uv = np.stack([ll / (2 * np.pi), (yy + 1) / 2], -1).reshape(-1, 2)
    return _concat([Mesh(pos, normal, uv, _grid(rows, n)), _disk(-1.0, n), _disk(1.0, n)])


def cone(n: int = 32, rows: int = 8) -> Mesh:
    """Apex at y = -1, a base of radius 1 at y = 1."""
    lo = np.linspace(0, 2 * np.pi, n)
    y = np.linspace(-1, 1, rows)
    yy, ll = np.meshgrid(y, lo, indexing="ij")
    r = (yy + 1) / 2
    pos = np.stack([r * np.cos(ll), yy, r * np.sin(ll)], -1).reshape(-1, 3)
    normal = np.stack([np.cos(ll), np.full_like(ll, -0.5), np.sin(ll)], -1).reshape(-1, 3)
    uv = np.stack([ll / (2 * np.pi), (yy + 1) / 2], -1).reshape(-1, 2)
    return _concat(
        [Mesh(pos, normal / np.linalg.norm(normal, axis=1, keepdims=True), uv, _grid(rows, n)), _disk(1.0, n)]
    )


def box(n: int = 6) -> Mesh:
    """The cube [-1, 1]^3, each face an n x n grid."""
    s = np.linspace(-1, 1, n)
    a, b = np.meshgrid(s, s, indexing="ij")
    faces = []
    for axis in range(3):
        for side in (-1.0, 1.0):
            pos = np.zeros((n, n, 3))
            u_ax, v_ax = [k for k in range(3) if k != axis]
            pos[..., axis], pos[..., u_ax], pos[..., v_ax] = side, a, b
            normal = np.zeros((n * n, 3))
            normal[:, axis] = side
            faces.append(
                Mesh(pos.reshape(-1, 3), normal, np.stack([(a + 1) / 2, (b + 1) / 2], -1).reshape(-1, 2), _grid(n, n))
            )
    return _concat(faces)


PRIMITIVES = {"sphere": sphere(), "cylinder": cylinder(), "cone": cone(), "box": box()}


def rot(x_deg: float = 0.0, y_deg: float = 0.0, z_deg: float = 0.0) -> np.ndarray:
    """Rotation about x, then y, then z (object frame), degrees."""
    x, y, z = np.deg2rad([x_deg, y_deg, z_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


MIRROR = np.diag([-1.0, 1.0, 1.0])  # left <-> right in the object frame


@dataclass
class Part:
    """A named primitive placed in the object: object point = affine @ unit point + centre."""

    name: str
    primitive: str
    affine: np.ndarray  # (3, 3): rotation @ diag(half-extents), times MIRROR for a right twin
    centre: np.ndarray  # (3,)
    texture: int  # index into the instance's textures; twins share one

    def place(self, unit_points: np.ndarray) -> np.ndarray:
        return unit_points @ self.affine.T + self.centre

    def mirrored(self, name: str) -> "Part":
        return Part(name, self.primitive, MIRROR @ self.affine, MIRROR @ self.centre, self.texture)


def part(name, primitive, size, centre, rotation=(0.0, 0.0, 0.0), texture=0) -> Part:
    return Part(name, primitive, rot(*rotation) @ np.diag(size), np.asarray(centre, dtype=float), texture)
