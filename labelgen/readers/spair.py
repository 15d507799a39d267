"""SPair-71k: `JPEGImages/<cat>/*.jpg`, `ImageAnnotation/<cat>/<img>.json` (kps, bndbox,
azimuth_id 0-7), `PairAnnotation/{trn,val,test}/*.json` (src/trg image names, keypoints,
bounding boxes, category).

    python -m labelgen.readers.spair /data/SPair-71k manifest.parquet
"""

import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UsageError
from . import reader_main

SPLITS = {"trn": "train", "val": "val", "test": "test"}


@dataclass
class KeypointPair:
    category: str
    src: str  # image ids: "<category>/<image stem>"
    tgt: str
    src_kps: np.ndarray  # (K, 2) pixels
    tgt_kps: np.ndarray
    tgt_bbox: np.ndarray  # (4,) x1, y1, x2, y2
    kps_ids: list[str]
    geo: np.ndarray | None = (
        None  # (K,) bool: the keypoint's left/right twin is visible in the target (GeoAware's subset)
    )


def image_id(category: str, name: str) -> str:
    return f"{category}/{os.path.splitext(name)[0]}"


def _json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable SPair annotation ({e})") from None


def read_pairs(root: str, split: str = "test") -> list[KeypointPair]:
    folder = os.path.join(root, "PairAnnotation", split)
    if not os.path.isdir(folder):
        raise UsageError(f"{folder} does not exist: is {root} an SPair-71k folder (split one of {list(SPLITS)})?")
    pairs = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        a = _json(os.path.join(folder, name))
        cat = a["category"]
        pairs.append(
            KeypointPair(
                cat,
                image_id(cat, a["src_imname"]),
                image_id(cat, a["trg_imname"]),
                np.asarray(a["src_kps"], dtype=np.float64).reshape(-1, 2),
                np.asarray(a["trg_kps"], dtype=np.float64).reshape(-1, 2),
                np.asarray(a["trg_bndbox"], dtype=np.float64),
                [str(k) for k in a.get("kps_ids", [])],
            )
        )
    return pairs


def scan(root: str) -> pd.DataFrame:
    """One row per annotated image; split from the pair split the image appears in (test wins)."""
    split_of = {}
    for short, split in sorted(SPLITS.items(), key=lambda kv: ["trn", "val", "test"].index(kv[0])):
        folder = os.path.join(root, "PairAnnotation", short)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            a = _json(os.path.join(folder, name))
            for im in (a["src_imname"], a["trg_imname"]):
                split_of[image_id(a["category"], im)] = split
    rows = []
    ann_root = os.path.join(root, "ImageAnnotation")
    if not os.path.isdir(ann_root):
        raise UsageError(f"{ann_root} does not exist: is {root} an SPair-71k folder?")
    for cat in sorted(os.listdir(ann_root)):
        for name in sorted(os.listdir(os.path.join(ann_root, cat))):
            a = _json(os.path.join(ann_root, cat, name))
            iid = image_id(cat, a.get("filename", name))
            rows.append(
                {
                    "image_id": iid,
                    "uri": os.path.join("JPEGImages", cat, os.path.splitext(name)[0] + ".jpg"),
                    "category": cat,
                    "azimuth": 45.0 * a["azimuth_id"] if a.get("azimuth_id") is not None else None,
                    "elevation": None,
                    "mask_uri": None,
                    "split": split_of.get(iid, "train"),
                }
            )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    raise SystemExit(reader_main(scan))
