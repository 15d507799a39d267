"""The label store (DuckLake: a SQL catalog over Parquet files); see lake.py and catalog.py."""

from .lake import LabelStore, code_version, now, sum_counts
from .schema import BAD_INPUT_SCHEMA, IMAGE_SCHEMA, LABEL_SCHEMA, PAIR_SCHEMA, current_labels_sql, current_pairs_sql, images_table

__all__ = ["BAD_INPUT_SCHEMA", "IMAGE_SCHEMA", "LABEL_SCHEMA", "PAIR_SCHEMA", "LabelStore", "code_version", "current_labels_sql",
           "current_pairs_sql", "images_table", "now", "sum_counts"]
