"""Readers that turn data sets on disk into manifests (and evaluation pairs).

Each reader module runs as `python -m labelgen.readers.NAME ROOT OUT.parquet`.
"""

import os
import sys

import pandas as pd

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def write_manifest(read, argv=None) -> int:
    """The reader CLI: read ROOT into a manifest with absolute URIs and write it."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m labelgen.readers.NAME ROOT OUT.parquet", file=sys.stderr)
        return 2
    root, out = argv
    try:
        df: pd.DataFrame = read(root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for col in ("uri", "mask_uri"):
        if col in df:
            df[col] = pd.Series([None if pd.isna(u) else os.path.join(os.path.abspath(root), u) for u in df[col]], dtype=object)
    df.to_parquet(out, index=False)
    print(f"{len(df)} images in {df['category'].nunique()} categories -> {out}")
    return 0
