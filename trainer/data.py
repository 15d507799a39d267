"""Training data: labelled image pairs of committed label runs, features from the cache.

Images are split by the manifest's `split` column: pairs of two held-out images
validate, pairs of two training images train, and mixed pairs are dropped, so
no held-out image is ever seen in training.
"""

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from labelgen.backbones import feature_groups
from labelgen.config import StoreConf
from labelgen.features import FLIPPED, FeatureCache, ImageFeatures
from labelgen.io import filesystem
from labelgen.store import IMAGE_SCHEMA, LABEL_SCHEMA, PAIR_SCHEMA, current_labels_sql, current_pairs_sql


@dataclass
class DataConf(StoreConf):
    snapshot: int | None = None  # the store snapshot to read (python -m queries snapshots); default: the latest
    runs: list[str] | None = None  # label runs to learn from (their current labels: per image pair, the latest run's);
    # default: every committed run with the latest run's backbone
    val_split: str = "val"  # images of this split are held out
    max_labels: int = 50  # labels per pair and step


default_conf = DataConf


@dataclass
class Pair:
    category: str
    src: str
    tgt: str
    src_xy: np.ndarray  # (L, 2) original pixels
    tgt_xy: np.ndarray


@dataclass
class LabelData:
    runs: list[str]
    snapshot: int  # of the store, which the runs were read at
    backbone: str
    features: FeatureCache  # the runs' backbone features
    train: list[Pair]
    val: list[Pair]
    images: pd.DataFrame  # image_id -> category, split, azimuth, width, height, homography
    flips: bool  # the runs cached mirrored features too
    val_split: str  # the held-out split
    manifests: list[str]  # of the runs

    @property
    def groups(self) -> list[int]:
        return feature_groups(self.backbone)


def _read(uris: list[str], schema: pa.Schema, columns: list[str], runs: list[str]) -> pa.Table:
    """The rows of `runs` in a table's Parquet files."""
    if not uris:
        return schema.empty_table().select(columns)
    fs, _ = filesystem(uris[0])
    dataset = pads.dataset([filesystem(u)[1] for u in uris], schema=schema, filesystem=fs, format="parquet")
    return dataset.to_table(columns=columns, filter=pc.field("run_id").isin(runs))


def load_label_data(source: dict, val_split: str) -> LabelData:
    """Any process: the current labels of the source's runs (per image pair, those of the
    latest of them that labelled it: each label counted once), split into train and held-out."""
    runs = source["runs"]
    con = duckdb.connect()
    try:
        con.register(
            "images_data",
            _read(
                source["images"],
                IMAGE_SCHEMA,
                ["image_id", "category", "split", "azimuth", "width", "height", "homography"],
                runs,
            ),
        )
        con.register(
            "history",
            _read(
                source["label_history"],
                LABEL_SCHEMA,
                ["run_id", "category", "src_image_id", "tgt_image_id", "src_x", "src_y", "tgt_x", "tgt_y"],
                runs,
            ),
        )
        con.register("pairs", _read(source["label_pairs"], PAIR_SCHEMA, PAIR_SCHEMA.names, runs))
        con.register(
            "run_snapshots",
            pa.table(
                {
                    "run_id": list(source["run_snapshots"]),
                    "snapshot": pa.array(list(source["run_snapshots"].values()), pa.int64()),
                }
            ),
        )
        con.execute(f"CREATE VIEW current AS {current_pairs_sql('pairs', 'run_snapshots')}")
        images = (
            con.execute(
                "SELECT image_id, any_value(category) AS category, any_value(split) AS split, any_value(azimuth) AS "
                "azimuth, any_value(width) AS width, any_value(height) AS height, any_value(homography) AS "
                "homography FROM images_data GROUP BY image_id"
            )
            .df()
            .set_index("image_id")
        )
        labels = con.execute(
            f"SELECT * EXCLUDE (run_id) FROM ({current_labels_sql('history', 'current')}) "
            "ORDER BY src_image_id, tgt_image_id, src_y, src_x, tgt_y, tgt_x"
        ).df()
    finally:
        con.close()
    held_out = set(images.index[images["split"] == val_split])
    train, val = [], []
    for (category, a, b), g in labels.groupby(["category", "src_image_id", "tgt_image_id"], sort=True):
        pair = Pair(
            category, a, b, g[["src_x", "src_y"]].to_numpy(np.float32), g[["tgt_x", "tgt_y"]].to_numpy(np.float32)
        )
        if a in held_out and b in held_out:
            val.append(pair)
        elif a not in held_out and b not in held_out:
            train.append(pair)
    return LabelData(
        runs,
        source["snapshot"],
        source["backbone"],
        source["features"],
        train,
        val,
        images,
        source["flips"],
        val_split,
        source["manifests"],
    )


@dataclass
class FeatureBank:
    """Cached backbone features by image, loaded once per process, kept as stored (float16 cells)."""

    features: FeatureCache
    _loaded: dict = field(default_factory=dict)

    def __call__(self, image_id: str) -> ImageFeatures:
        if image_id not in self._loaded:
            self._loaded[image_id] = self.features.load(image_id)
        return self._loaded[image_id]

    def grid(self, image_id: str) -> torch.Tensor:
        """(C, h, w) float32, zeros in the cells not stored."""
        return self(image_id).grid().permute(2, 0, 1).float()

    def view(self, image_id: str, xy_px: np.ndarray, flip: bool) -> tuple[str, np.ndarray]:
        """The cache id and pixel coordinates of the image, or of its mirrored twin."""
        if not flip:
            return image_id, xy_px
        mirrored = np.array(xy_px, dtype=np.float32)
        mirrored[:, 0] = self(image_id).width - mirrored[:, 0]
        return image_id + FLIPPED, mirrored

    def to_grid(self, image_id: str, xy_px: np.ndarray) -> torch.Tensor:
        """Original pixels -> grid coordinates (cell centres at integers)."""
        return self(image_id).to_grid(torch.tensor(np.asarray(xy_px, dtype=np.float32)))
