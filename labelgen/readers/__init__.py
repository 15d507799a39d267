"""Readers that turn data sets on disk into manifests (and evaluation pairs).

Each reader module runs as `python -m labelgen.readers.NAME ROOT OUT.parquet`.
"""

import os
from dataclasses import dataclass

import pandas as pd

from ..cli import run_command
from ..config import ConfigError
from ..manifest import write_manifest

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class ReaderConf:
    """A reader has no keys: ROOT and OUT.parquet say all."""


def reader_main(scan, argv=None) -> int:
    """A reader's command line: scan ROOT (the data set's folder) into a manifest with
    absolute URIs and write it to OUT.parquet (for labelgen.run data.manifest=)."""

    def write(conf, words: list[str]) -> int:
        if len(words) != 2:
            raise ConfigError("give ROOT OUT.parquet: the data set's folder and the manifest to write")
        root, out = words
        df: pd.DataFrame = scan(root)
        for col in ("uri", "mask_uri"):
            if col in df:
                df[col] = pd.Series(
                    [None if pd.isna(u) else os.path.join(os.path.abspath(root), u) for u in df[col]], dtype=object
                )
        write_manifest(df, out)
        print(f"{len(df)} images in {df['category'].nunique()} categories -> {out}")
        return 0

    write.__module__ = scan.__module__  # the reader's name and docstring in --help
    return run_command(ReaderConf, write, argv, words="ROOT OUT.parquet", announce=False)
