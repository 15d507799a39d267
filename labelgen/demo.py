"""The embedded demo collection: real photos shipped by PyPI packages, rendered as
posed views of a plane, so the true correspondence of every pixel is known."""

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from .config import Location, collection_manifest
from .errors import UsageError
from .geometry import plane_homography
from .manifest import write_manifest


def _skimage(name):
    import skimage.data

    return os.path.join(skimage.data.data_dir, name)


def _sklearn(name):
    import sklearn.datasets

    return os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", name)


def _matplotlib(name):
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "sample_data", name)


PHOTOS = {
    "chelsea": lambda: _skimage("chelsea.png"),
    "astronaut": lambda: _skimage("astronaut.png"),
    "coffee": lambda: _skimage("coffee.png"),
    "rocket": lambda: _skimage("rocket.jpg"),
    "motorcycle": lambda: _skimage("motorcycle_left.png"),
    "china": lambda: _sklearn("china.jpg"),
    "flower": lambda: _sklearn("flower.jpg"),
    "grace_hopper": lambda: _matplotlib("grace_hopper.jpg"),
    # photos the demo does not use: precision on them is measured, never tuned on
    "camera": lambda: _skimage("camera.png"),
    "coins": lambda: _skimage("coins.png"),
    "hubble": lambda: _skimage("hubble_deep_field.jpg"),
    "ihc": lambda: _skimage("ihc.png"),
    "retina": lambda: _skimage("retina.jpg"),
    "present": lambda: _matplotlib("Minduka_Present_Blue_Pack.png"),
}
UNSEEN = ["camera", "coins", "hubble", "ihc", "retina", "present"]


@dataclass
class DemoConf:
    root: Location = "data"  # the collection lands in <root>/demo-<config hash>/
    photos: list[str] = field(default_factory=lambda: [p for p in PHOTOS if p not in UNSEEN])  # one category per photo
    instances: int = 1  # categories per photo (own view jitter each): a larger collection for benchmarks
    azimuths: list[int] = field(default_factory=lambda: [-60, -45, -30, -15, 0, 15, 30, 45, 60])  # degrees, each view
    elevations: list[int] = field(default_factory=lambda: [0, 15])  # degrees, each view
    roll: float = 0.0  # in-plane roll, degrees, drawn per view in [-roll, roll]; above 0 the manifest gives theta (full
    # pose)
    size: int = 320  # square views, pixels
    focal: float = 384.0  # pixels; the frontal plane fills about 80% of the view
    scale_jitter: float = 0.08  # relative focal jitter per view
    shift_jitter: float = 0.04  # principal point jitter, fraction of the view
    val_fraction: float = 0.2  # views in the held-out val split
    background: int = 114  # grey level around the plane
    seed: int = 0  # jitter and splits


default_conf = DemoConf


def load_photo(name: str) -> Image.Image:
    if name not in PHOTOS:
        raise UsageError(f"demo photo '{name}' is unknown; choose from {sorted(PHOTOS)}")
    return Image.open(PHOTOS[name]()).convert("RGB")


def render_view(photo: Image.Image, hom: np.ndarray, size: int, background: int):
    """Warp the photo and its footprint into a view with the photo->view homography."""
    coeffs = np.linalg.inv(hom)
    coeffs = (coeffs / coeffs[2, 2]).flatten()[:8]
    view = Image.new("RGB", (size, size), (background,) * 3)
    warped = photo.transform((size, size), Image.PERSPECTIVE, tuple(coeffs), Image.BICUBIC)
    footprint = Image.new("L", photo.size, 255).transform(
        (size, size), Image.PERSPECTIVE, tuple(coeffs), Image.BILINEAR
    )
    mask = footprint.point(lambda v: 255 if v >= 128 else 0)
    view.paste(warped, (0, 0), mask)
    return view, mask


def build_demo(conf=None) -> str:
    """Render the collection if it is not there yet; return its manifest path."""
    conf, manifest_path = collection_manifest(default_conf, conf, "demo")
    root = os.path.dirname(manifest_path)
    if os.path.exists(manifest_path):
        return manifest_path
    rng = np.random.default_rng(conf.seed)
    rows = []
    categories = [(p, p if conf.instances == 1 else f"{p}{i}") for p in conf.photos for i in range(conf.instances)]
    for photo_name, name in categories:
        photo = load_photo(photo_name)
        os.makedirs(os.path.join(root, "images", name), exist_ok=True)
        os.makedirs(os.path.join(root, "masks", name), exist_ok=True)
        for elevation in conf.elevations:
            for azimuth in conf.azimuths:
                focal = conf.focal * (1 + rng.uniform(-1, 1) * conf.scale_jitter)
                shift = rng.uniform(-1, 1, 2) * conf.shift_jitter * conf.size
                principal = (conf.size / 2 + shift[0], conf.size / 2 + shift[1])
                theta = rng.uniform(-conf.roll, conf.roll) if conf.roll else 0.0
                hom = plane_homography(photo.size, azimuth, elevation, focal, principal, theta_deg=theta)
                view, mask = render_view(photo, hom, conf.size, conf.background)
                image_id = f"{name}_az{azimuth:+04d}_el{elevation:+03d}"
                uri, mask_uri = f"images/{name}/{image_id}.png", f"masks/{name}/{image_id}.png"
                view.save(os.path.join(root, uri))
                mask.save(os.path.join(root, mask_uri))
                rows.append(
                    {
                        "image_id": image_id,
                        "uri": uri,
                        "category": name,
                        "azimuth": float(azimuth),
                        "elevation": float(elevation),
                        **({"theta": theta} if conf.roll else {}),
                        "mask_uri": mask_uri,
                        "split": "val" if rng.uniform() < conf.val_fraction else "train",
                        "homography": hom.flatten().tolist(),
                    }
                )
    return write_manifest(pd.DataFrame(rows), manifest_path)  # last: its presence means complete


if __name__ == "__main__":
    from .cli import run_command

    raise SystemExit(run_command(default_conf, lambda conf: print(build_demo(conf)) or 0))
