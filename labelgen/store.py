"""The label store: Parquet label files and a DuckDB catalog of runs.

Layout under the store folder:
    labels/run_id=<run>/category=<category>/part-<n>.parquet
    catalog.duckdb   runs, bad_inputs
Label files carry every column (run_id and category included), so each file
stands alone. Readers see a run's labels through the `labels` view only once
the run's status is 'committed'.
"""

import glob
import io as _io
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from .io import is_remote, write_bytes
from .labels import LABEL_SCHEMA

CATALOG_DDL = [
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, status VARCHAR, started TIMESTAMPTZ, finished TIMESTAMPTZ,
        manifest VARCHAR, backbone VARCHAR, backbone_fingerprint VARCHAR,
        config VARCHAR, config_hash VARCHAR, counts JSON)""",
    """CREATE TABLE IF NOT EXISTS bad_inputs (
        run_id VARCHAR, image_id VARCHAR, uri VARCHAR, stage VARCHAR, error VARCHAR)""",
]


def _now():
    return datetime.now(timezone.utc)


class LabelStore:
    def __init__(self, uri: str):
        if is_remote(uri):
            raise ValueError(f"store={uri}: the label store must be a local folder for now")
        self.root = os.path.abspath(os.path.expanduser(uri))
        self.catalog = os.path.join(self.root, "catalog.duckdb")

    @contextmanager
    def _db(self, read_only=False):
        if read_only and not os.path.exists(self.catalog):
            raise FileNotFoundError(f"no label store at {self.root} (no catalog.duckdb); run `python -m labelgen.run` first")
        os.makedirs(self.root, exist_ok=True)
        con = duckdb.connect(self.catalog, read_only=read_only)
        try:
            if not read_only:
                for ddl in CATALOG_DDL:
                    con.execute(ddl)
            yield con
        finally:
            con.close()

    def part_uri(self, run_id: str, category: str, part: int) -> str:
        return os.path.join(self.root, "labels", f"run_id={run_id}", f"category={category}", f"part-{part:05d}.parquet")

    def write_part(self, table: pa.Table, run_id: str, category: str, part: int) -> str:
        """Write one part file whole; the same (run, category, part) overwrites, never duplicates."""
        buf = _io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        uri = self.part_uri(run_id, category, part)
        write_bytes(uri, buf.getvalue())
        return uri

    def begin_run(self, run_id, manifest, backbone, fingerprint, config_yaml, config_hash):
        with self._db() as con:
            con.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, 'running', ?, NULL, ?, ?, ?, ?, ?, NULL)",
                [run_id, _now(), manifest, backbone, fingerprint, config_yaml, config_hash],
            )

    def add_bad_inputs(self, run_id: str, rows: list[dict]):
        if not rows:
            return
        with self._db() as con:
            con.executemany(
                "INSERT INTO bad_inputs VALUES (?, ?, ?, ?, ?)",
                [[run_id, r["image_id"], r.get("uri"), r["stage"], r["error"]] for r in rows],
            )

    def finish_run(self, run_id: str, counts: dict, status: str = "committed"):
        with self._db() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished = ?, counts = ? WHERE run_id = ?",
                [status, _now(), json.dumps(counts), run_id],
            )

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection with a `labels` view over committed runs."""
        con = duckdb.connect(self.catalog, read_only=True) if os.path.exists(self.catalog) else None
        if con is None:
            raise FileNotFoundError(f"no label store at {self.root} (no catalog.duckdb); run `python -m labelgen.run` first")
        pattern = os.path.join(self.root, "labels", "*", "*", "*.parquet")
        if glob.glob(pattern):
            source = f"read_parquet('{pattern}', union_by_name = true)"
        else:
            cols = ", ".join(f"NULL::{_duck_type(f.type)} AS {f.name}" for f in LABEL_SCHEMA)
            source = f"(SELECT {cols} WHERE false)"
        con.execute(
            f"CREATE TEMP VIEW labels AS SELECT l.* FROM {source} l "
            "JOIN runs r USING (run_id) WHERE r.status = 'committed'"
        )
        return con


def _duck_type(t: pa.DataType) -> str:
    return {pa.string(): "VARCHAR", pa.float32(): "FLOAT", pa.int32(): "INTEGER"}[t]
