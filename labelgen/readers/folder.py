"""A plain folder: `ROOT/<category>/**/<image>`; no pose, no masks: the run estimates both (pose.*,
foreground.*) and says how.

python -m labelgen.readers.folder /data/my-objects manifest.parquet
"""

import os

import pandas as pd

from ..errors import UsageError
from . import IMAGE_EXTENSIONS, reader_main


def scan(root: str) -> pd.DataFrame:
    if not os.path.isdir(root):
        raise UsageError(f"{root} is not a folder")
    rows = []
    for category in sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))):
        for folder, _, files in sorted(os.walk(os.path.join(root, category))):
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    rel = os.path.relpath(os.path.join(folder, name), root)
                    rows.append({"image_id": os.path.splitext(rel)[0], "uri": rel, "category": category})
    if not rows:
        raise UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in category subfolders of {root}")
    return pd.DataFrame(rows)


if __name__ == "__main__":
    raise SystemExit(reader_main(scan))
