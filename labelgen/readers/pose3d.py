"""ImageNet3D / PASCAL3D+-style 3D pose annotations:

    ROOT/images/<category>/<name>.<ext>
    ROOT/annotations/<category>/<name>.json or .npz   azimuth, elevation, theta (radians)
    ROOT/masks/<category>/<name>.png                   optional

    python -m labelgen.readers.pose3d /data/imagenet3d manifest.parquet

The manifest gets degrees, so pairing uses geodesic rotation distance.
"""

import json
import os

import numpy as np
import pandas as pd

from ..errors import UsageError
from . import IMAGE_EXTENSIONS, reader_main

KEYS = ("azimuth", "elevation", "theta")


def read_pose(path: str) -> dict[str, float]:
    if path.endswith(".npz"):
        with np.load(path) as z:
            raw = {k: z[k] for k in KEYS if k in z}
    else:
        with open(path) as f:
            raw = json.load(f)
    missing = [k for k in KEYS if k not in raw]
    if missing:
        raise UsageError(f"{path}: no {missing}; a pose annotation has azimuth, elevation and theta in radians")
    return {k: float(np.rad2deg(np.asarray(raw[k], dtype=np.float64).reshape(-1)[0])) for k in KEYS}


def scan(root: str) -> pd.DataFrame:
    images, annotations = os.path.join(root, "images"), os.path.join(root, "annotations")
    if not os.path.isdir(images) or not os.path.isdir(annotations):
        raise UsageError(f"{root} needs images/<category>/ and annotations/<category>/ folders")
    rows = []
    for category in sorted(os.listdir(images)):
        for name in sorted(os.listdir(os.path.join(images, category))):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            ann = next(
                (
                    p
                    for p in (os.path.join(annotations, category, stem + e) for e in (".json", ".npz"))
                    if os.path.exists(p)
                ),
                None,
            )
            pose = read_pose(ann) if ann else dict.fromkeys(KEYS)
            mask = os.path.join("masks", category, stem + ".png")
            rows.append(
                {
                    "image_id": f"{category}/{stem}",
                    "uri": os.path.join("images", category, name),
                    "category": category,
                    **pose,
                    "mask_uri": mask if os.path.exists(os.path.join(root, mask)) else None,
                }
            )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    raise SystemExit(reader_main(scan))
