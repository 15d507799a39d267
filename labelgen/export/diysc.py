"""DIY-SC's pseudo-label files, as its `gen_pseudo_labels.py` writes them and its
`pck_train.py` reads them (`utils/utils_dataset.py::load_spair_data_pseudo_gt`):

    <out>/<version>/trn/<category>_anns.pt     pairs of two train (or dev) images
    <out>/<version>/val/<category>_anns.pt     pairs of two val images
    <out>/JPEGImages/<category>/<image>        the images, where the loader opens them

Each file is `torch.save` of a list with one dict per ordered image pair: src_imname,
trg_imname (file names in JPEGImages/<category>/), src_imsize, tgt_imsize ([W, H]),
num_kps, source_kps, target_kps ([[x, y], ...] in DIY-SC's frame: the image scaled so
that its longer side is 840 and zero-padded to a centred 840 x 840 square) and
img_size_kps (840); plain lists, ints, floats and strings, which load under
`torch.load(weights_only=True)`. Pairs of two test images, or of two splits, are left out.

DIY-SC's trainer takes its categories from its dataset root's ImageAnnotation/ (SPair's)
and opens a trn and a val file for each. With `spair=<SPair-71k folder>`, `out` becomes
such a root: ImageAnnotation/ and PairAnnotation/ link to SPair's, SPair's images join
the export's in JPEGImages/, and every SPair category without labels gets empty files.
"""

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ..console import Progress
from ..errors import MissingInput, UsageError
from . import Written
from .images import FOLDER, pair_images, place
from .selection import Selection, per_pair, points

SIZE = 840  # DIY-SC's img_size_kps: the longer side, and the square's
SPLITS = {"train": "trn", "dev": "trn", "val": "val"}  # image split -> DIY-SC's; pairs of two are left out
ANNOTATIONS = ("ImageAnnotation", "PairAnnotation")  # the SPair folders DIY-SC evaluates on


def square_frame(width, height, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale and x, y offsets from an image's pixels to DIY-SC's square, as its `resize`
    (utils_correspondence.py) draws the image and `preprocess_kps_pad` moves points."""
    w, h = np.asarray(width, np.float64), np.asarray(height, np.float64)
    scale = size / np.maximum(w, h)
    off_x = np.where(w < h, (size - np.around(size * w / h)) // 2, 0.0)
    off_y = np.where(h < w, (size - np.around(size * h / w)) // 2, 0.0)
    return scale, off_x, off_y


def to_square(xy: np.ndarray, width, height, size: int = SIZE) -> np.ndarray:
    scale, off_x, off_y = square_frame(width, height, size)
    return xy * scale[..., None] + np.stack([off_x, off_y], axis=-1)


def from_square(xy: np.ndarray, width, height, size: int = SIZE) -> np.ndarray:
    scale, off_x, off_y = square_frame(width, height, size)
    return (xy - np.stack([off_x, off_y], axis=-1)) / scale[..., None]


def annotations(pairs: pa.Table, names: dict[str, str]) -> dict[str, list[dict]]:
    """DIY-SC's dicts of `pairs` (Selection.pairs), by DIY-SC split."""
    counts = pairs["labels"].to_numpy()
    size = {end: [pairs[f"{end}_{c}"].to_pylist() for c in ("width", "height")] for end in ("src", "tgt")}
    kps = {
        end: per_pair(to_square(points(pairs, end), *(np.repeat(v, counts) for v in size[end])), pairs)
        for end in ("src", "tgt")
    }
    out = {"trn": [], "val": []}
    rows = zip(
        pairs["src_image_id"].to_pylist(),
        pairs["tgt_image_id"].to_pylist(),
        pairs["split"].to_pylist(),
        *size["src"],
        *size["tgt"],
    )
    for i, (src, tgt, split, src_w, src_h, tgt_w, tgt_h) in enumerate(rows):
        out[split].append(
            {
                "src_imname": names[src],
                "trg_imname": names[tgt],
                "src_imsize": [src_w, src_h],
                "tgt_imsize": [tgt_w, tgt_h],
                "num_kps": int(counts[i]),
                "source_kps": kps["src"][i],
                "target_kps": kps["tgt"][i],
                "img_size_kps": SIZE,
            }
        )
    return out


def spair_categories(spair: str) -> list[str]:
    if missing := [f for f in (*ANNOTATIONS, FOLDER) if not os.path.isdir(os.path.join(spair, f))]:
        raise MissingInput(
            f"spair={spair}: no {', '.join(missing)} in it; give the SPair-71k folder DIY-SC evaluates on"
        )
    return sorted(os.listdir(os.path.join(spair, "ImageAnnotation")))


def link_spair(spair: str, root: str, link: str, taken: set[tuple[str, str]]) -> int:
    """Make `root` a DIY-SC dataset root: SPair's annotation folders, and its images beside
    the export's (an export image of the same name stays)."""
    for folder in ANNOTATIONS:
        os.symlink(os.path.join(spair, folder), os.path.join(root, folder))
    folders = {c: os.path.join(spair, FOLDER, c) for c in spair_categories(spair)}
    rows = [
        (category, os.path.join(folder, name), name)
        for category, folder in folders.items()
        for name in (sorted(os.listdir(folder)) if os.path.isdir(folder) else [])
        if (category, name) not in taken
    ]
    return place(pd.DataFrame(rows, columns=["category", "uri", "name"]), root, link, "SPair images")


def write(sel: Selection, root: str, conf, out: str, counts: pd.DataFrame) -> Written:
    """Write the pairs `counts` counts (Selection.counts, of this format's splits) into `root`, to become `out`."""
    version = f"s{sel.snapshot}" if conf.version is None else str(conf.version)
    spair = spair_categories(conf.spair) if conf.spair else []
    if spair and (foreign := sorted(set(sel.categories) - set(spair))):
        raise UsageError(
            f"categories {', '.join(foreign)} are not SPair-71k's ({conf.spair}/ImageAnnotation), and DIY-SC reads "
            f"only those: map them to its names, e.g. category_map=[{foreign[0]}=<one of {', '.join(spair)}>]"
        )
    placed, files = [], 0
    with Progress(int(counts["pairs"].sum()), "export diysc", "pairs") as progress:
        for name in sorted(set(sel.categories) | set(spair)):
            by_split = {}
            if name in sel.categories:
                pairs = sel.pairs(name, SPLITS)
                images = pair_images(pairs, name, sel.categories[name])
                by_split = annotations(pairs, dict(zip(images["image_id"], images["name"])))
                placed.append(images)
                progress.update(pairs.num_rows)
            for split in ("trn", "val"):  # both, even empty: DIY-SC opens both
                os.makedirs(os.path.join(root, version, split), exist_ok=True)
                torch.save(by_split.get(split, []), os.path.join(root, version, split, f"{name}_anns.pt"))
                files += 1
    images = pd.concat(placed, ignore_index=True)
    n_images = place(images, root, conf.link, "diysc images")
    if conf.spair:
        n_images += link_spair(conf.spair, root, conf.link, set(zip(images["category"], images["name"])))
    root_note = "" if conf.spair else " (give spair=<SPair-71k folder> to make it a dataset root DIY-SC evaluates on)"
    return Written(
        files,
        n_images,
        f"in DIY-SC: python preprocess_map.py --base_dir {out}/{FOLDER} --dino && python pck_train.py "
        f"--config configs/train_spair.yaml --ONLY_DINO --DATASET_DIR_SPAIR {out} "
        f"--TRAIN_DATASET_ANN_DIR {out}/{version}{root_note}",
    )
