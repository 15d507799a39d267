"""The label store (DuckLake: a SQL catalog over Parquet files); see lake.py and catalog.py."""

from .lake import LabelStore, code_version, now, sum_counts
from .schema import BAD_INPUT_SCHEMA, IMAGE_SCHEMA, LABEL_SCHEMA, images_table

__all__ = ["BAD_INPUT_SCHEMA", "IMAGE_SCHEMA", "LABEL_SCHEMA", "LabelStore", "code_version", "images_table", "now", "sum_counts"]
