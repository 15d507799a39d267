"""Is a store whole? The catalog opens, every table and view reads, and every data file the
catalog lists is where it says, of the size it was registered with, with a Parquet footer.

A committed run's files are only ever written by its tasks, before the commit, and never
again: a file that is missing or changed afterwards was deleted or damaged outside the
store (a cleanup script, a full disk, a lifecycle rule), and reads of the tables that hold
it fail. `check` names each such file and the run it belongs to.
"""

import re
from urllib.parse import unquote
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..io import filesystem, is_remote, join
from . import catalog as cat
from .schema import DATA_TABLES, LOG_TABLES, VIEWS

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


def check(store) -> dict:
    """{"tables": names read, "files": count checked, "problems": [(what, run, why)]}."""
    problems, tables = [], [*DATA_TABLES, *LOG_TABLES, *VIEWS]
    try:
        con = cat.attach(store.uri, store.catalog, read_only=True)
    except (RuntimeError, duckdb.Error) as e:
        return {"tables": [], "files": 0, "problems": [("the catalog", None, str(e).splitlines()[0])]}
    try:
        files = []
        for table in [*DATA_TABLES, *LOG_TABLES]:
            files += con.execute(f"SELECT data_file, data_file_size_bytes FROM ducklake_list_files('lake', '{table}')").fetchall()
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
        return f"store {store}: whole ({len(report['tables'])} tables and views read, {report['files']:,} data files checked)"
    lines = [f"store {store}: {len(report['problems'])} problem(s)"]
    for what, run, why in report["problems"]:
        lines.append(f"  {what}{f' (run {run})' if run else ''}: {why}")
    runs = sorted({r for _, r, _ in report["problems"] if r})
    if runs:
        lines.append(f"A data file is written once, before its run commits: restore it from a backup of {store} (or the "
                     f"bucket's object versions); the store as it was before run(s) {', '.join(runs)} committed still reads "
                     "(python -m queries snapshots, then --at SNAPSHOT).")
    if any(r is None for _, r, _ in report["problems"]):
        lines.append("A catalog or table that cannot be read: restore the catalog from a backup, or read an earlier snapshot "
                     f"(python -m labelgen.store attach --store {store} --at SNAPSHOT).")
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
            return (f"store {store}: the data file {path}{f' of run {run}' if run else ''} is missing or damaged "
                    f"({str(e).splitlines()[0]}); python -m labelgen.store check --store {store} lists every such file "
                    "and what to do")
    return None
