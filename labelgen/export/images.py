"""The image files of an export: `JPEGImages/<category>/<name>`, where DIY-SC's and
SPair-style loaders look for them, one name per image.

A name is the image id, less its category's prefix (an SPair-71k image `car/2008_000123`
keeps SPair's own name), `/` made `__`, and an extension those loaders read: JPEG files are
named .jpg, PNG files .png, and any other format is written again as PNG (DIY-SC's
preprocess_map.py computes features only for .jpg, .JPEG and .png files).
"""

import io
import os
import posixpath
import shutil
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
from PIL import Image

from ..console import Progress
from ..errors import MissingInput, UsageError
from ..io import is_remote, read_bytes

FOLDER = "JPEGImages"
LINKS = ("symlink", "copy", "none")
KEPT = {".jpg": ".jpg", ".jpeg": ".jpg", ".jpe": ".jpg", ".png": ".png"}  # extension -> the name's


def local_path(uri: str) -> str:
    return uri.removeprefix("file://")


def image_name(image_id: str, uri: str, sources: list[str]) -> str:
    """The file name of an image of one of the collection's categories `sources`."""
    prefix = next((f"{c}/" for c in sources if image_id.startswith(f"{c}/")), "")
    return image_id.removeprefix(prefix).replace("/", "__") + KEPT.get(posixpath.splitext(uri)[1].lower(), ".png")


def pair_images(pairs: pa.Table, category: str, sources: list[str]) -> pd.DataFrame:
    """The images of the pairs (Selection.pairs) of the export's `category`, gathered from
    the collection's `sources`, one row each: image_id, uri, mask_uri, width, height, its
    `category` and file `name`."""
    ends = [
        pairs.select([f"{end}_image_id", *(f"{end}_{c}" for c in ("uri", "mask_uri", "width", "height"))])
        .to_pandas()
        .rename(columns=lambda c: c.removeprefix(f"{end}_"))
        for end in ("src", "tgt")
    ]
    frame = pd.concat(ends).drop_duplicates("image_id").sort_values("image_id", ignore_index=True)
    frame["category"] = category
    frame["name"] = [image_name(i, u, sources) for i, u in zip(frame["image_id"], frame["uri"])]
    if (twins := frame[frame.duplicated("name", keep=False)]).size:
        raise UsageError(
            f"images {', '.join(twins['image_id'].iloc[:2])} would share the file name {twins['name'].iloc[0]} in one "
            "category of the export: give them different categories in category_map, or export them apart"
        )
    return frame


def place(images: pd.DataFrame, root: str, link: str, desc: str) -> int:
    """Put each image (columns category, uri, name) at root/JPEGImages/<category>/<name>:
    a symbolic link or a copy of a local file (copied from an object store), a PNG where
    the format is not JPEG or PNG. Returns how many files it made."""
    if link == "none" or images.empty:
        return 0
    local = images[~images["uri"].map(is_remote)]
    missing = local[~local["uri"].map(lambda uri: os.path.isfile(local_path(uri)))]
    if len(missing):
        raise MissingInput(
            f"{len(missing):,} images of the export are not where the store says, e.g. {missing['uri'].iloc[0]}: "
            "put them back (or export with link=none and place the images yourself)"
        )
    for category in images["category"].unique():
        os.makedirs(os.path.join(root, FOLDER, category), exist_ok=True)

    def one(row) -> None:
        dst = os.path.join(root, FOLDER, row.category, row.name)
        converted = KEPT.get(posixpath.splitext(row.uri)[1].lower()) is None
        if converted:
            Image.open(io.BytesIO(read_bytes(row.uri))).save(dst, "PNG")
        elif is_remote(row.uri):
            with open(dst, "wb") as f:
                f.write(read_bytes(row.uri))
        elif link == "symlink":
            os.symlink(os.path.abspath(local_path(row.uri)), dst)
        else:
            shutil.copyfile(local_path(row.uri), dst)

    with Progress(len(images), desc, "images") as progress, ThreadPoolExecutor(16) as pool:
        for _ in pool.map(one, images.itertuples(index=False)):
            progress.update(1)
    return len(images)


def boxes(images: pd.DataFrame) -> list[list[int]]:
    """Each image's object box [x1, y1, x2, y2] in its pixels: around its mask where the
    manifest gave one (scaled if the mask has another size), else the whole image."""

    def box(row) -> list[int]:
        whole = [0, 0, int(row.width), int(row.height)]
        if not isinstance(row.mask_uri, str):
            return whole
        mask = Image.open(io.BytesIO(read_bytes(row.mask_uri))).convert("L")
        found = mask.getbbox()
        if found is None:
            return whole
        sx, sy = row.width / mask.width, row.height / mask.height
        return [round(found[0] * sx), round(found[1] * sy), round(found[2] * sx), round(found[3] * sy)]

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(box, images.itertuples(index=False)))
