"""What a store's first write creates: the tables and views of schema.py; and a store of the
layout before current labels, upgraded in place, once."""

import logging

import pyarrow as pa

from ..io import write_bytes
from . import catalog as cat
from .files import RunFiles, table_bytes
from .schema import DATA_TABLES, LABEL_SCHEMA, LOG_TABLES, VIEWS, pair_table

log = logging.getLogger(__name__)
SQL_TYPES = {pa.float64(): "DOUBLE", pa.string(): "VARCHAR"}  # of the columns a table may gain
INLINE_ROWS = 1000  # inserts of up to this many rows live in the catalog, not in a Parquet file each


def create_tables(con, store):
    """The store's tables and views, unless a writer made them already."""
    have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()}
    if {*DATA_TABLES, *LOG_TABLES} <= have:
        _add_columns(con, store)
        return

    if "labels" in have:
        _upgrade(con, store, have)

    def create():
        with cat.transaction(con):
            for name, schema in DATA_TABLES.items():
                con.register("empty", schema.empty_table())
                con.execute(f"CREATE TABLE IF NOT EXISTS lake.{name} AS SELECT * FROM empty")
                con.unregister("empty")
            for name, ddl in LOG_TABLES.items():
                con.execute(f"CREATE TABLE IF NOT EXISTS lake.{name} ({ddl})")
            for name, sql in VIEWS.items():
                con.execute(f"CREATE OR REPLACE VIEW lake.{name} AS {sql}")
            con.execute(f"CALL lake.set_option('data_inlining_row_limit', {INLINE_ROWS})")

    cat.retrying(f"create store {store}", create)


def _add_columns(con, store):
    """Columns a data table gained since the store was made (images: theta, pose_source,
    pose_confidence, mask_source), added empty: files written before read them as null."""
    for name, schema in DATA_TABLES.items():
        cols = con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = 'lake' AND table_name = ?", [name]
        ).fetchall()
        missing = [f for f in schema if f.name not in {c for (c,) in cols}]
        if not missing:
            continue

        def add(missing=missing, name=name):
            with cat.transaction(con):
                for f in missing:
                    con.execute(f"ALTER TABLE lake.{name} ADD COLUMN IF NOT EXISTS {f.name} {SQL_TYPES[f.type]}")

        cat.retrying(f"upgrade store {store}", add)
        log.info("store %s: table %s gained %s", store, name, ", ".join(f.name for f in missing))


def _upgrade(con, store, have: set[str]):
    """The previous layout kept every label in a table `labels` and had no label_pairs. In
    one transaction, per run: its labels into a file of label_history and the image pairs
    they cover into one of label_pairs (pairs it examined and kept nothing of were not
    recorded then), both registered as a run's own files are; then the old table goes.
    (Not a RENAME: DuckLake 1.4.4 cannot read a renamed table's inlined data afterwards.)"""

    def upgrade():
        with cat.transaction(con):
            for name in ("label_history", "label_pairs"):
                con.register("empty", DATA_TABLES[name].empty_table())
                con.execute(f"CREATE TABLE lake.{name} AS SELECT * FROM empty")
                con.unregister("empty")
            for (run_id,) in con.execute("SELECT DISTINCT run_id FROM lake.labels ORDER BY 1").fetchall():
                rows = con.execute("FROM lake.labels WHERE run_id = ?", [run_id]).fetch_arrow_table()
                pairs = pair_table(run_id, "", rows, rows).drop_columns("category")  # category: per label, below
                pairs = pairs.join(
                    rows.select(["src_image_id", "tgt_image_id", "category"])
                    .group_by(["src_image_id", "tgt_image_id", "category"])
                    .aggregate([]),
                    ["src_image_id", "tgt_image_id"],
                )
                for name, table in (
                    ("label_history", rows.cast(LABEL_SCHEMA)),
                    ("label_pairs", pairs.select(DATA_TABLES["label_pairs"].names).cast(DATA_TABLES["label_pairs"])),
                ):
                    uri = RunFiles(store.uri, run_id).path(name, "upgrade.parquet")
                    write_bytes(uri, table_bytes(table))
                    con.execute(f"CALL ducklake_add_data_files('lake', '{name}', ?)", [uri])
            con.execute("DROP TABLE lake.labels")

    def add_column():
        with cat.transaction(con):
            con.execute("ALTER TABLE lake.run_log ADD COLUMN IF NOT EXISTS label_hash VARCHAR")

    cat.retrying(f"upgrade store {store}", add_column)
    cat.retrying(f"upgrade store {store}", upgrade)
    have.update({"label_history", "label_pairs"})
    log.warning("store %s: upgraded to current labels (label_history, label_pairs, the view labels)", store)
