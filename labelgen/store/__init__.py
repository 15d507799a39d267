"""The label store (DuckLake: a SQL catalog over Parquet files); see lake.py and catalog.py."""

from .connections import new_id, now
from .lake import LabelStore
from .runs import code_version
from .schema import (
    BAD_INPUT_SCHEMA,
    IMAGE_SCHEMA,
    LABEL_SCHEMA,
    PAIR_SCHEMA,
    current_labels_sql,
    current_pairs_sql,
    images_table,
)
from .staging import sum_counts

__all__ = [
    "BAD_INPUT_SCHEMA",
    "IMAGE_SCHEMA",
    "LABEL_SCHEMA",
    "PAIR_SCHEMA",
    "LabelStore",
    "code_version",
    "current_labels_sql",
    "current_pairs_sql",
    "images_table",
    "new_id",
    "now",
    "sum_counts",
]
