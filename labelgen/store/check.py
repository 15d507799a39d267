"""Is a store whole? The catalog opens, every table and view reads, and every data file the
catalog lists is where it says, of the size it was registered with, with a Parquet footer.

A committed run's files are only ever written by its tasks, before the commit, and never
again: a file that is missing or changed afterwards was deleted or damaged outside the
store (a cleanup script, a full disk, a lifecycle rule), and reads of the tables that hold
it fail. `check` names each such file and the run it belongs to.
"""

import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..io import filesystem, is_remote, join
from . import catalog as cat
from .schema import DATA_TABLES, LOG_TABLES, VIEWS

META = "__ducklake_metadata_lake."  # DuckLake's own tables, where the catalog is attached as lake
# Data files whose mapping_id (their columns' names -> the table's field ids) is no map of their own
# table: reading the table fails ("Unknown name map id") or maps another table's columns. DuckLake
# 1.4's own commit retry leaves them (fixed upstream in 1f1d1b97, not in 1.4): the store turns it
# off, and tests/faults/catalog_stress.py shows it. Catalog rows only: cheap enough for every open.
DAMAGED_FILES = """
SELECT f.data_file_id, f.table_id, f.mapping_id, f.begin_snapshot
FROM {m}ducklake_data_file f
WHERE f.mapping_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM {m}ducklake_column_mapping c
                  WHERE c.mapping_id = f.mapping_id AND c.table_id = f.table_id)
ORDER BY f.data_file_id"""
# The map such a file's own commit wrote for its table: map ids come from the previous snapshot's
# next_file_id, and a commit writes its maps before its files.
OWN_MAP = """
SELECT f.data_file_id, (SELECT max(c.mapping_id) FROM {m}ducklake_column_mapping c
                        WHERE c.table_id = f.table_id AND c.mapping_id < f.data_file_id
                          AND c.mapping_id >= (SELECT s.next_file_id FROM {m}ducklake_snapshot s
                                               WHERE s.snapshot_id = f.begin_snapshot - 1)) AS mapping_id
FROM ({damaged}) f"""
RUN_FILE = re.compile(r"/runs/([^/]+)/")
QUOTED = re.compile(r"""["']([^"']+\.parquet)["']""")  # DuckDB quotes the file it failed on


def run_of(path: str) -> str | None:
    """The run whose task wrote a data file (None for DuckLake's own: inserts, compaction)."""
    m = RUN_FILE.search(path)
    return m.group(1) if m else None


def file_problem(path: str, size: int) -> str | None:
    """Why a registered data file cannot be read: missing, another size, no Parquet footer."""
    fs, local = filesystem(path)
    info = fs.get_file_info(local)
    if info.type != pafs.FileType.File:
        return "missing"
    if info.size != size:
        return f"{info.size:,} bytes, registered with {size:,}"
    try:
        with fs.open_input_file(local) as f:
            pq.read_metadata(f)
    except Exception as e:  # pyarrow's errors for a damaged footer vary (ArrowInvalid, OSError)
        return f"not a readable Parquet file ({str(e).splitlines()[0]})"
    return None


def damaged_files(con, snapshot: int | None = None) -> list[tuple]:
    """(data file id, table id, mapping id, snapshot) of the files that name no map of their
    table (of those a reader at `snapshot` reads)."""
    return [d for d in con.execute(DAMAGED_FILES.format(m=META)).fetchall() if snapshot is None or d[3] <= snapshot]


def damaged_message(store, damaged: list[tuple]) -> str:
    snapshots = sorted({s for *_, s in damaged})
    return (
        f"store {store}: the catalog is damaged: {len(damaged)} data file(s) of snapshot(s) {snapshots} name column "
        "maps their table does not have (DuckLake 1.4's own commit retry leaves this; the store keeps it off, but an "
        "older labelgen or another DuckDB client may have written with it on): repair it with `python -m "
        f"labelgen.store repair store={store}`, or read the store as it was before (at={snapshots[0] - 1})"
    )


def mend(con) -> dict:
    """Point each damaged file of the DuckLake attached as `lake` at the map its own commit
    wrote for its table, in one transaction; {"repaired": n, "left": files without one}."""
    with cat.transaction(con):
        fixes = con.execute(OWN_MAP.format(m=META, damaged=DAMAGED_FILES.format(m=META))).fetchall()
        for file_id, mapping_id in fixes:
            if mapping_id is not None:
                con.execute(
                    f"UPDATE {META}ducklake_data_file SET mapping_id = ? WHERE data_file_id = ?", [mapping_id, file_id]
                )
    left = damaged_files(con)
    return {"repaired": len(fixes) - len(left), "left": left}


def repair(store) -> dict:
    """mend() the store's catalog."""
    con = cat.attach(store.uri, store.catalog)
    try:
        return mend(con)
    finally:
        con.close()


def check(store) -> dict:
    """{"tables": names read, "files": count checked, "problems": [(what, run, why)]}."""
    problems, tables = [], [*DATA_TABLES, *LOG_TABLES, *VIEWS]
    try:
        con = cat.attach(store.uri, store.catalog, read_only=True)
    except (RuntimeError, duckdb.Error) as e:
        return {"tables": [], "files": 0, "problems": [("the catalog", None, str(e).splitlines()[0])]}
    try:
        if damaged := damaged_files(con):
            problems.append(("the catalog", None, damaged_message(store, damaged)))
        files = []
        for table in [*DATA_TABLES, *LOG_TABLES]:
            files += con.execute(
                f"SELECT data_file, data_file_size_bytes FROM ducklake_list_files('lake', '{table}')"
            ).fetchall()
        for name in tables:
            try:
                con.execute(f"SELECT count(*) FROM lake.{name}").fetchall()
            except duckdb.Error as e:
                problems.append((f"table {name}", None, str(e).splitlines()[0]))
    finally:
        con.close()
    with ThreadPoolExecutor(16 if is_remote(store.uri) else 4) as pool:
        for (path, _), why in zip(files, pool.map(lambda f: file_problem(*f), files)):
            if why:
                problems.append((path, run_of(path), why))
    return {"tables": tables, "files": len(files), "problems": problems}


def describe(store, report: dict) -> str:
    """The report for a person: what was checked, each problem, and what to do."""
    if not report["problems"]:
        read, checked = len(report["tables"]), report["files"]
        return f"store {store}: whole ({read} tables and views read, {checked:,} data files checked)"
    lines = [f"store {store}: {len(report['problems'])} problem(s)"]
    for what, run, why in report["problems"]:
        lines.append(f"  {what}{f' (run {run})' if run else ''}: {why}")
    runs = sorted({r for _, r, _ in report["problems"] if r})
    if runs:
        lines.append(
            f"A data file is written once, before its run commits: restore it from a backup of {store} (or the "
            f"bucket's object versions); the store as it was before run(s) {', '.join(runs)} committed still reads "
            "(python -m queries snapshots, then at=SNAPSHOT)."
        )
    if any(r is None for _, r, _ in report["problems"]):
        lines.append(
            "A catalog or table that cannot be read: restore the catalog from a backup, or read an earlier snapshot "
            f"(python -m labelgen.store attach store={store} at=SNAPSHOT)."
        )
    return "\n".join(lines)


def explain(store, e: duckdb.Error) -> str | None:
    """A reader's error about one of the store's data files (a path, or on S3 the URL DuckDB
    fetched), in the store's words; None for any other error."""
    root = store.uri.split("://", 1)[-1].rstrip("/") + "/"
    for quoted in QUOTED.findall(str(e)):
        name = unquote(quoted)
        if root in name:
            path = join(store.uri, name.split(root, 1)[1])
            run = run_of(path)
            return (
                f"store {store}: the data file {path}{f' of run {run}' if run else ''} is missing or damaged "
                f"({str(e).splitlines()[0]}); python -m labelgen.store check store={store} lists every such file and "
                "what to do"
            )
    return None
