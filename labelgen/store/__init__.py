"""The label store (DuckLake: a SQL catalog over Parquet files); see lake.py and catalog.py.

Two sides: `RunFiles` (files.py), a run's own files, is all a Ray task gets; `LabelStore`
(lake.py), the catalog side, is the driver's. The catalog side loads on first use, so that
task code, which imports the files and the schemas only, never loads it."""

from .files import RunFiles, sum_counts
from .schema import (
    BAD_INPUT_SCHEMA,
    IMAGE_SCHEMA,
    LABEL_SCHEMA,
    PAIR_SCHEMA,
    current_labels_sql,
    current_pairs_sql,
    images_table,
)

CATALOG_SIDE = {"LabelStore": "lake", "code_version": "lake", "new_id": "connections", "now": "connections"}

__all__ = [
    "BAD_INPUT_SCHEMA",
    "IMAGE_SCHEMA",
    "LABEL_SCHEMA",
    "PAIR_SCHEMA",
    "RunFiles",
    "current_labels_sql",
    "current_pairs_sql",
    "images_table",
    "sum_counts",
    *CATALOG_SIDE,
]


def __getattr__(name: str):
    if name in CATALOG_SIDE:
        from importlib import import_module

        return getattr(import_module(f".{CATALOG_SIDE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
