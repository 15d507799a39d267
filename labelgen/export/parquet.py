"""The selected labels as plain Parquet, one folder per category (hive style):

    <out>/category=<category>/part-<n>.parquet

with the store's label columns (labelgen.store.LABEL_SCHEMA: coordinates in the original
image's pixels) and the pair's `split` (null for a pair of two splits), in the export's
order. Every file's metadata names the store and the snapshot (keys labelgen.store,
labelgen.snapshot, labelgen.filters). pandas, Polars, DuckDB, Spark and Hugging Face
`datasets` read the folder as one table, `category` from the folder names.
"""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from ..console import Progress
from . import Written
from .selection import Selection

SPLITS = None  # every pair, whatever its split


def metadata(sel: Selection) -> dict[str, str]:
    return {
        "labelgen.store": sel.store.uri,
        "labelgen.snapshot": str(sel.snapshot),
        "labelgen.filters": json.dumps(sel.filters.record()),
    }


def write(sel: Selection, root: str, conf, out: str, counts: pd.DataFrame) -> Written:
    """Write the pairs `counts` counts (Selection.counts, of this format's splits) into `root`, to become `out`."""
    reader = sel.labels()
    schema = reader.schema.with_metadata(metadata(sel))
    files = []
    with Progress(int(counts["labels"].sum()), "export parquet", "labels") as progress:

        def batches():
            for batch in reader:
                progress.update(batch.num_rows)
                yield batch

        pads.write_dataset(
            pa.RecordBatchReader.from_batches(schema, batches()),
            root,
            format="parquet",
            partitioning=["category"],
            partitioning_flavor="hive",
            basename_template="part-{i}.parquet",
            preserve_order=True,
            file_visitor=files.append,
            existing_data_behavior="overwrite_or_ignore",
        )
    return Written(
        len(files),
        0,
        f"pandas.read_parquet(\"{out}\"), or duckdb: SELECT * FROM read_parquet('{out}/*/*.parquet', "
        "hive_partitioning = true)",
    )
