"""Write the current labels of a snapshot for other tools to train on or read.

    python -m labelgen.export out=FOLDER [format=diysc|spair|parquet] [at=SNAPSHOT] [key=value ...]

format=diysc    DIY-SC's pseudo-label files: <out>/<version>/{trn,val}/<category>_anns.pt,
                points in DIY-SC's 840 x 840 frame, images in <out>/JPEGImages/<category>/;
                with spair=, <out> is a dataset root DIY-SC trains and evaluates on
format=spair    SPair-71k pair annotations: <out>/PairAnnotation/{trn,val,test}/*.json,
                points in the images' own pixels, images likewise
format=parquet  every label column: <out>/category=<category>/part-<n>.parquet, the store
                and snapshot in each file's metadata

A pair's split is its two images' manifest split (an image without one counts as train);
a pair of two splits has none. diysc writes train and dev pairs to trn and val pairs to
val, spair also test pairs to test; both leave the other pairs out and say how many.
max_per_pair keeps each pair's most confident labels (ties in order of position). The
export reads one snapshot, pinned when it starts: the same `at` writes the same labels
however many runs commit later. <out>/_export.json records what was exported, from where.
"""

import json
import os
import shutil
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd

from ..cli import run_command
from ..config import Location, StoreConf
from ..errors import UsageError
from ..store import LabelStore, code_version, now
from . import diysc, parquet, spair
from .images import LINKS
from .selection import Filters, Selection

FORMATS = {"diysc": diysc, "spair": spair, "parquet": parquet}
RECORD = "_export.json"  # what an export wrote, from where; its presence lets overwrite=true replace the folder


@dataclass
class ExportConf(StoreConf):
    at: int | None = None  # the snapshot to export (python -m queries snapshots lists them); default: the latest
    format: str = "diysc"  # diysc | spair | parquet
    out: Location | None = None  # the folder to write (required): a new or empty one, or an earlier export with
    # overwrite=true
    overwrite: bool = False  # replace the earlier export in `out`
    runs: list[str] = field(default_factory=list)  # only the current labels of these runs; default: every run's
    categories: list[str] = field(default_factory=list)  # only these categories (the collection's names); default:
    # every one
    split: list[str] = field(default_factory=list)  # only pairs whose two images are of these manifest splits, e.g.
    # [train,val]; default: every pair
    max_per_pair: int = 0  # at most this many labels per image pair, the most confident ones; 0: all
    category_map: list[str] = field(default_factory=list)  # a category's name in the export, NAME=NEW each, e.g.
    # [motorcycle=motorbike]
    link: str = "symlink"  # how images go into JPEGImages/ (diysc, spair): symlink | copy | none (s3:// ones are
    # copied)
    spair: Location | None = None  # diysc: the SPair-71k folder DIY-SC evaluates on; makes `out` a dataset root DIY-SC
    # trains on
    version: str | None = None  # diysc: the labels' folder in `out` (DIY-SC's dataset_version); default: s<snapshot>


default_conf = ExportConf


def category_map(items) -> dict[str, str]:
    pairs = [str(item).split("=", 1) for item in items]
    bad = [str(i) for i, p in zip(items, pairs) if len(p) != 2 or not all(p) or p[1] in (".", "..") or "/" in p[1]]
    if bad:
        raise UsageError(
            f"category_map: {', '.join(bad)} are not NAME=NEW items with a file name for NEW; "
            "e.g. category_map=[motorcycle=motorbike]"
        )
    names = dict(pairs)
    if len(names) < len(pairs):
        raise UsageError(f"category_map: a category is named twice in {list(items)}; give each one once")
    return names


def output_folder(out, overwrite: bool) -> str:
    """`out` as an absolute local folder that an export may fill, or the UsageError saying why not."""
    if not out:
        raise UsageError("out: name the folder to write the export to, e.g. out=exports/diysc")
    if "://" in str(out):
        raise UsageError(f"out={out}: give a local folder (the loaders read local files); copy it elsewhere after")
    out = os.path.abspath(os.path.expanduser(str(out)))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"out={out} is a file: give a folder")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, RECORD)):
            raise UsageError(f"out={out} holds files that are not an export (no {RECORD}): give a new or empty folder")
        if not overwrite:
            raise UsageError(f"out={out} holds an earlier export: give overwrite=true to replace it, or another folder")
    return out


@contextmanager
def staged(out: str):
    """A new folder beside `out` that takes its place once the export is whole: an export
    that fails or is stopped leaves `out` as it was."""
    tmp = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.exists(out):
            os.rename(out, f"{tmp}.old")
        os.rename(tmp, out)
    finally:
        for leftover in (tmp, f"{tmp}.old"):
            shutil.rmtree(leftover, ignore_errors=True)


def many(n: int, thing: str, things: str = "") -> str:
    return f"{n:,} {thing if n == 1 else things or thing + 's'}"


def splits_said(counts: pd.DataFrame) -> str:
    """`test/test (3 pairs), train/val (1 pair)`: the image splits of the pairs counted."""
    rows = zip(counts["src_split"], counts["tgt_split"], counts["pairs"])
    return ", ".join(f"{a}/{b} ({many(n, 'pair')})" for a, b, n in rows)


def export(conf) -> int:
    t0 = time.perf_counter()
    if conf.format not in FORMATS:
        raise UsageError(f"format={conf.format}: choose {' | '.join(FORMATS)}")
    if conf.link not in LINKS:
        raise UsageError(f"link={conf.link}: choose {' | '.join(LINKS)}")
    if conf.spair and conf.format != "diysc":
        raise UsageError(f"spair={conf.spair}: only format=diysc takes it (it makes `out` a DIY-SC dataset root)")
    if conf.max_per_pair < 0:
        raise UsageError(f"max_per_pair={conf.max_per_pair}: give a number of labels, or 0 for all")
    writer = FORMATS[conf.format]
    out = output_folder(conf.out, conf.overwrite)
    filters = Filters(
        runs=[str(r) for r in conf.runs],
        categories=[str(c) for c in conf.categories],
        splits=[str(s) for s in conf.split],
        max_per_pair=conf.max_per_pair,
        names=category_map(conf.category_map),
    )
    with Selection(LabelStore(conf.store, conf.catalog), conf.at, filters) as sel:
        counts = sel.counts(writer.SPLITS)
        if not counts["labels"].sum():
            raise UsageError(f"no labels to export: {sel.why_empty()}")
        kept = counts if writer.SPLITS is None else counts[counts["split"].notna()]
        left = counts.drop(kept.index)
        if kept.empty:
            raise UsageError(
                f"format={conf.format} writes pairs whose two images are of splits {', '.join(writer.SPLITS)}, and "
                f"the selected labels are on pairs of {splits_said(left)}: choose labels of those splits, or "
                "format=parquet"
            )
        pairs, labels = int(kept["pairs"].sum()), int(kept["labels"].sum())
        with staged(out) as root:
            written = writer.write(sel, root, conf, out, kept)
            record = {
                "format": conf.format,
                "store": sel.store.uri,
                "snapshot": sel.snapshot,
                "filters": filters.record(),
                "pairs": pairs,
                "labels": labels,
                "files": written.files,
                "images": written.images,
                "written": now(),
                "code_version": code_version(),
            }
            with open(os.path.join(root, RECORD), "w") as f:
                json.dump(record, f, indent=1)
    images = f", {many(written.images, 'image')} ({conf.link})" if written.images else ""
    categories = many(len(sel.categories), "category", "categories")
    print(
        f"exported {many(labels, 'label')} on {many(pairs, 'image pair')} of {categories}"
        f" from snapshot {sel.snapshot} of store {sel.store} as {conf.format}: {many(written.files, 'file')}{images}"
        f" in {out} ({time.perf_counter() - t0:.1f} s)"
    )
    if len(left):
        print(
            f"left out: {many(int(left['labels'].sum()), 'label')} on pairs of image splits {conf.format} has no "
            f"place for: {splits_said(left)}"
        )
    print(f"next: {written.next}")
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, export, argv)


if __name__ == "__main__":
    sys.exit(main())
