"""A posed collection of rendered 3D objects with exact part-level truth.

Per category, `dev_instances` objects drawn from the generator seed `seed` and
`val_instances` from a seed of their own: dev and val share neither an instance
nor a random stream. Each instance is seen from `views` cameras around the full
circle of azimuths, at elevations and small in-plane rolls drawn per view, with
scale and position jitter, over a photo or patterned background. Per view the
collection holds the image, the object mask, the truth (part id and canonical
coordinate per pixel, camera depth: `truth/<id>.npz`) and the named keypoints with
their visibility and left/right twin (`keypoints.parquet`, read by `read_keypoints`).
"""

import io as _io
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from PIL import Image

from ..config import Location, collection_manifest
from ..console import Progress
from ..demo import PHOTOS, load_photo
from ..errors import UsageError
from ..geometry import rotation
from ..io import read_bytes
from ..manifest import write_manifest
from .categories import CATEGORIES, keypoints, part_names, twin
from .render import Renderer, project
from .shapes import PRIMITIVES


@dataclass
class ObjectsConf:
    root: Location = "data"  # the collection lands in <root>/objects-v<format>-<config hash>/
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))  # quadruped, bird, chair, lamp, amphora,
    # figure
    dev_instances: int = 4  # per category, from the generator seed `seed`: tune on these
    val_instances: int = 3  # per category, from seed `seed` + 1: report on these only
    views: int = 10  # per instance, spread over the full circle of azimuths
    size: int = 320  # square views, pixels
    elevation: list[float] = field(default_factory=lambda: [0.0, 40.0])  # degrees, drawn per view
    roll: float = 10.0  # in-plane roll, degrees, drawn in [-roll, roll]
    fill: float = 0.85  # the object's bounding sphere spans this fraction of the view
    scale_jitter: float = 0.1  # relative
    shift_jitter: float = 0.05  # fraction of the view
    seed: int = 0  # the dev generator seed


default_conf = ObjectsConf
SPLIT_SEEDS = {"dev": 0, "val": 1}  # added to `seed`
FORMAT = 3  # of the files; part of the folder name, so a collection of an older format is rendered anew


def _crop(photo: Image.Image, rng, size: int) -> np.ndarray:
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.3, 0.8))
    x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
    return np.asarray(photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR))


def pattern(rng, size: int = 128) -> np.ndarray:
    """A procedural texture: stripes, checks, dots or noise in two random colours."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    kind, freq = rng.integers(4), rng.integers(3, 9)
    if kind == 0:
        m = np.sin(2 * np.pi * freq * (xx * np.cos(rng.uniform(0, np.pi)) + yy * np.sin(rng.uniform(0, np.pi)))) > 0
    elif kind == 1:
        m = (np.floor(xx * freq) + np.floor(yy * freq)) % 2 == 0
    elif kind == 2:
        m = ((xx * freq % 1 - 0.5) ** 2 + (yy * freq % 1 - 0.5) ** 2) < 0.1
    else:
        m = rng.uniform(size=(size // 8, size // 8)).repeat(8, 0).repeat(8, 1) > 0.5
    return np.where(m[..., None], a, b).astype(np.uint8)


def textures(rng, photos: dict, n: int = 4) -> list[np.ndarray]:
    """Per texture slot a photo crop (from the photos the Python packages ship) or a pattern."""
    return [
        _crop(photos[rng.choice(sorted(photos))], rng, 128) if rng.uniform() < 0.5 else pattern(rng) for _ in range(n)
    ]


def background(rng, photos: dict, size: int) -> np.ndarray:
    if rng.uniform() < 0.6:
        return _crop(photos[rng.choice(sorted(photos))], rng, size)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    noise = rng.normal(0, 12, (size, size, 1))
    return np.clip(a * (1 - ramp) + b * ramp + noise, 0, 255).astype(np.uint8)


def bounds(parts) -> tuple[np.ndarray, float]:
    """Centre and radius of the instance's bounding sphere."""
    pts = np.concatenate([p.place(PRIMITIVES[p.primitive].pos) for p in parts])
    centre = (pts.min(0) + pts.max(0)) / 2
    return centre, float(np.linalg.norm(pts - centre, axis=1).max())


def camera(rng, conf, centre: np.ndarray, radius: float, azimuth: float):
    """Pose (azimuth, elevation, theta in degrees), R, t, focal, principal point of one view."""
    elevation = rng.uniform(*conf.elevation)
    theta = rng.uniform(-conf.roll, conf.roll)
    R = rotation(azimuth, elevation, theta)
    focal = 1.2 * conf.size
    distance = focal * radius / (conf.fill * conf.size / 2) * (1 + rng.uniform(-1, 1) * conf.scale_jitter)
    shift = rng.uniform(-1, 1, 2) * conf.shift_jitter * conf.size
    t = np.array([0.0, 0.0, distance]) - R @ centre
    return (azimuth, elevation, theta), R, t, focal, (conf.size / 2 + shift[0], conf.size / 2 + shift[1])


def keypoint_rows(image_id, category, parts, R, t, focal, principal, part_map, depth) -> list[dict]:
    """Each keypoint's pixel and whether the camera sees it (nothing nearer at that pixel)."""
    by_name, rows = {p.name: p for p in parts}, []
    for name, (part_name, point) in keypoints(category).items():
        if part_name not in by_name:  # an optional part this instance lacks
            continue
        x, y, z = project(by_name[part_name].place(np.asarray([point], float)), R, t, focal, principal)[0]
        col, row = int(np.floor(x)), int(np.floor(y))
        inside = 0 <= col < depth.shape[1] and 0 <= row < depth.shape[0]
        visible = bool(inside and z <= depth[row, col] + 0.01 * z)
        rows.append(
            {
                "image_id": image_id,
                "category": category,
                "name": name,
                "part": part_name,
                "x": float(x),
                "y": float(y),
                "visible": visible,
                "twin": twin(name),
            }
        )
    return rows


def read_keypoints(uri: str) -> pd.DataFrame:
    """A collection's keypoints: per view and name the pixel, whether the view sees it, and the
    name of its left/right twin (None: a central keypoint). Files written before the `twin`
    column get it from the names."""
    kps = pd.read_parquet(_io.BytesIO(read_bytes(uri)))
    return kps if "twin" in kps.columns else kps.assign(twin=kps["name"].map(twin))


def render_instance(renderer, root: str, conf, category: str, instance: str, split: str, rng, photos, bar):
    """All views of one instance: files under `root`, manifest rows, keypoint rows."""
    parts = CATEGORIES[category](rng)
    ids = {name: i + 1 for i, name in enumerate(part_names(category))}
    texs = [renderer.texture(t) for t in textures(rng, photos)]
    centre, radius = bounds(parts)
    start, rows, kps = rng.uniform(0, 360), [], []
    for v in range(conf.views):
        azimuth = (start + 360.0 * v / conf.views + rng.uniform(-10, 10)) % 360.0 - 180.0
        pose, R, t, focal, principal = camera(rng, conf, centre, radius, azimuth)
        light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-1, -0.3), -1.0])
        colour, part, coord, depth = renderer.render(
            parts, [ids[p.name] for p in parts], texs, R, t, focal, principal, light
        )
        mask = part > 0
        image_id = f"{instance}-v{v:02d}"
        files = {
            "uri": f"images/{category}/{image_id}.png",
            "mask_uri": f"masks/{category}/{image_id}.png",
            "truth_uri": f"truth/{category}/{image_id}.npz",
        }
        for f in files.values():
            os.makedirs(os.path.join(root, os.path.dirname(f)), exist_ok=True)
        Image.fromarray(np.where(mask[..., None], colour, background(rng, photos, conf.size))).save(
            os.path.join(root, files["uri"])
        )
        Image.fromarray((mask * 255).astype(np.uint8)).save(os.path.join(root, files["mask_uri"]))
        np.savez_compressed(
            os.path.join(root, files["truth_uri"]),
            **truth_arrays(part, coord, depth, parts, ids, R, t, focal, principal),
        )
        kps += keypoint_rows(image_id, category, parts, R, t, focal, principal, part, depth)
        rows.append(
            {
                "image_id": image_id,
                **files,
                "category": category,
                "azimuth": pose[0],
                "elevation": pose[1],
                "theta": pose[2],
                "split": split,
                "instance": instance,
            }
        )
        bar.update(1)
    for tex in texs:
        tex.release()
    return rows, kps


def truth_arrays(part, coord, depth, parts, ids: dict, R, t, focal, principal) -> dict:
    """A view's truth file: per pixel the part id, canonical coordinate and camera depth;
    the camera; where each part of the instance sits (by part id; nan where absent), so
    that any canonical point maps to the object and into the view exactly; each part's
    left/right twin (0: none)."""
    affine = np.full((len(ids) + 1, 3, 3), np.nan)
    centre = np.full((len(ids) + 1, 3), np.nan)
    for p in parts:
        affine[ids[p.name]], centre[ids[p.name]] = p.affine, p.centre
    return {
        "part": part,
        "coord": coord.astype(np.float16),
        "depth": depth.astype(np.float32),
        "R": R,
        "t": t,
        "intrinsics": np.array([focal, *principal]),
        "affine": affine,
        "centre": centre,
        "twin": twin_ids(ids),
    }


def twin_ids(ids: dict) -> np.ndarray:
    """(P + 1,) per part id: the id of its left/right twin, 0 for a central part."""
    out = np.zeros(len(ids) + 1, dtype=np.int32)
    for name, i in ids.items():
        out[i] = ids.get(twin(name), 0)
    return out


def build_collection(conf=None) -> str:
    """Render the collection if it is not there yet; return its manifest path.

    The rendering runs in a process of its own: Mesa's llvmpipe and the LLVM inside
    triton (which torch imports on demand) crash a process that loads both, Mesa first."""
    conf, manifest_path = collection_manifest(default_conf, conf, f"objects-v{FORMAT}")
    if os.path.exists(manifest_path):
        return manifest_path
    unknown = sorted(set(conf.categories) - set(CATEGORIES))
    if unknown:
        raise UsageError(f"data.objects.categories: {unknown} are unknown; choose from {sorted(CATEGORIES)}")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(render_collection, OmegaConf.to_container(conf), manifest_path).result()
    return manifest_path


def render_collection(conf: dict, manifest_path: str):
    """Render every view of the collection `conf` into the folder of `manifest_path`, the manifest last."""
    conf, root = OmegaConf.create(conf), os.path.dirname(manifest_path)
    photos = {name: load_photo(name) for name in PHOTOS}
    renderer = Renderer(conf.size)
    rows, kps = [], []
    total = len(conf.categories) * (conf.dev_instances + conf.val_instances) * conf.views
    with Progress(total, f"render {root}", "views") as bar:
        for category in conf.categories:
            for split, count in (("dev", conf.dev_instances), ("val", conf.val_instances)):
                rng = np.random.default_rng([conf.seed + SPLIT_SEEDS[split], sorted(CATEGORIES).index(category)])
                for k in range(count):
                    more, more_kps = render_instance(
                        renderer, root, conf, category, f"{category}-{split}{k}", split, rng, photos, bar
                    )
                    rows += more
                    kps += more_kps
    renderer.release()
    pd.DataFrame(kps).to_parquet(os.path.join(root, "keypoints.parquet"), index=False)
    with open(os.path.join(root, "parts.json"), "w") as f:
        json.dump({c: part_names(c) for c in conf.categories}, f, indent=1)
    write_manifest(pd.DataFrame(rows), manifest_path)  # last: its presence means complete
