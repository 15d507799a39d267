"""Connections to a store's catalog: short-lived, so that no transaction or lock outlives the
call that needs it. A writer creates the tables on its first use; a reader opens the latest
snapshot or one given; a conflict retries the whole call (catalog.retrying)."""

import json
import math
import os
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

import duckdb

from ..io import join
from . import catalog as cat
from .check import damaged_files, damaged_message
from .schema import COLUMNS, JSON_COLUMNS
from .tables import create_tables


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_id() -> str:
    """An id for a run, a model or a mapper: the time it was made (ids sort by it), and a random tail."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def record(row: dict) -> dict:
    """A catalog row as the pipeline's record: JSON parsed, times as ISO strings."""
    out = {}
    for k, v in row.items():
        if k in JSON_COLUMNS and isinstance(v, str):
            v = json.loads(v)
        elif isinstance(v, datetime):
            v = v.replace(tzinfo=timezone.utc).isoformat(timespec="milliseconds")
        out[k] = v
    return out


def records(cursor) -> list[dict]:
    """A query's rows as records."""
    names = [d[0] for d in cursor.description]
    return [record(dict(zip(names, r))) for r in cursor.fetchall()]


def insert_log(con, table: str, record: dict):
    """A row of a log table (run_log, model_log, spheres), in `con`'s transaction."""
    con.execute(f"INSERT INTO lake.{table} VALUES ({', '.join('?' * len(COLUMNS[table]))})", _log_row(table, record))


def _log_row(table: str, record: dict) -> list:
    """Values in the column order of a log table; JSON columns serialised; unknown keys refused."""
    unknown = set(record) - set(COLUMNS[table]) - ({"status"} if table == "model_log" else set())  # status: derived
    if unknown:
        raise ValueError(f"{table} has no columns {sorted(unknown)}; columns: {COLUMNS[table]}")
    return [
        _json(record.get(c)) if c in JSON_COLUMNS and record.get(c) is not None else record.get(c)
        for c in COLUMNS[table]
    ]


def _json(value) -> str:
    """Standard JSON, NaN and infinities as null: a PostgreSQL catalog's JSON type refuses them
    (a model trained without held-out pairs has NaN scores)."""

    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(value), allow_nan=False)


class Connections:
    """Connections to the catalog `catalog` of the store at `uri`."""

    def __init__(self, uri: str, catalog: str | None = None):
        self.uri = uri
        self.catalog = catalog or None

    @contextmanager
    def writer(self):
        con = cat.attach(self.uri, self.catalog, create=True)
        try:
            create_tables(con, self)
            cat.mark_created(self.uri, self.catalog)
            yield con
        finally:
            con.close()

    def session(self, what: str, fn, read_only: bool = True):
        """fn(con) on a fresh connection to the store, again after a lock conflict."""

        def attempt():
            con = cat.attach(self.uri, self.catalog, read_only=read_only)
            try:
                return fn(con)
            finally:
                con.close()

        return cat.retrying(f"{what} {self}", attempt)

    def rows(self, sql: str, params=()) -> list[dict]:
        """Rows of a query on the latest snapshot; none when the store does not exist yet."""
        try:
            return self.session("read", lambda con: records(con.execute(sql, params)))
        except FileNotFoundError:
            return []

    def append(self, table: str, record: dict):
        def insert():
            with self.writer() as con:
                insert_log(con, table, record)

        cat.retrying(f"append to {table} of {self}", insert)

    def current_snapshot(self) -> int:
        return self.session(
            "snapshot of", lambda con: con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
        )

    def data_files(self, table: str, snapshot: int) -> list[str]:
        """The Parquet URIs that hold `table` at `snapshot`, for readers that must not open the
        catalog (Ray tasks and Train workers). label_history, label_pairs and images only:
        their rows are always registered files, never inlined, never deleted. After compaction a file may also hold
        rows of later runs: readers filter by run_id (runs committed at `snapshot`)."""
        rows = self.session(
            "files of",
            lambda con: con.execute(
                f"SELECT data_file, delete_file FROM ducklake_list_files('lake', '{table}', snapshot_version => "
                f"{int(snapshot)})"
            ).fetchall(),
        )
        if any(d for _, d in rows):
            raise RuntimeError(
                f"table {table} of {self} has deleted rows at snapshot {snapshot}; read it through the catalog"
            )
        return [f for f, _ in rows]

    def connect(self, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
        """A read-only DuckDB connection at the latest snapshot (or `snapshot`): the tables and
        views of the store. It cannot write, nor read any file outside the store and its catalog."""
        con = cat.retrying(
            f"open {self}", lambda: cat.attach(self.uri, self.catalog, read_only=True, snapshot=snapshot)
        )
        if damaged := damaged_files(con, snapshot):
            con.close()
            raise RuntimeError(damaged_message(self, damaged))
        allowed = [join(self.uri, "")]
        sqlite = cat.sqlite_file(self.uri, cat.resolve_catalog(self.uri, self.catalog, create=False))
        if sqlite:
            allowed.append(os.path.dirname(sqlite) + "/")
        con.execute("SET enable_progress_bar = false")
        con.execute("SET allowed_directories = ?", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con
