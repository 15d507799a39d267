"""Readers that turn data sets on disk into manifests (and evaluation pairs).

Each reader module runs as `python -m labelgen.readers.NAME ROOT OUT.parquet`.
"""

import argparse
import os
import sys

import pandas as pd

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def write_manifest(read, argv=None) -> int:
    """The reader CLI: read ROOT into a manifest with absolute URIs and write it."""
    module = sys.modules[read.__module__]
    parser = argparse.ArgumentParser(prog=f"python -m {module.__spec__.name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", metavar="ROOT", help="the data set's folder")
    parser.add_argument("out", metavar="OUT.parquet", help="the manifest to write (for labelgen.run data.manifest=)")
    a = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        df: pd.DataFrame = read(a.root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for col in ("uri", "mask_uri"):
        if col in df:
            df[col] = pd.Series([None if pd.isna(u) else os.path.join(os.path.abspath(a.root), u) for u in df[col]], dtype=object)
    df.to_parquet(a.out, index=False)
    print(f"{len(df)} images in {df['category'].nunique()} categories -> {a.out}")
    return 0
