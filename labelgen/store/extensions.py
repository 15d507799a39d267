"""DuckDB extensions from the installed `duckdb-ext-*` wheels, never from the network.

The label store needs DuckLake and the scanner of its catalog (SQLite or PostgreSQL),
plus httpfs and aws for data on S3. The wheels are pinned to duckdb 1.4.4 (the LTS
line) in pyproject.toml; a missing one is named with the pip command that installs it.
"""

import importlib.util
import os
from functools import cache

import duckdb

WHEELS = {  # extension -> the PyPI wheel that ships it
    "ducklake": "duckdb-ext-ducklake",
    "sqlite_scanner": "duckdb-ext-sqlite",
    "postgres_scanner": "duckdb-ext-postgres",
    "httpfs": "duckdb-ext-httpfs",
    "aws": "duckdb-ext-aws",
}


def extension_dir() -> str | None:
    """<site-packages>/duckdb_ext/extensions, where the wheels put their binaries."""
    spec = importlib.util.find_spec("duckdb_ext")
    return os.path.join(list(spec.submodule_search_locations)[0], "extensions") if spec else None


@cache
def platform() -> str:
    con = duckdb.connect()
    try:
        return con.execute("PRAGMA platform").fetchone()[0]
    finally:
        con.close()


def extension_path(name: str) -> str:
    root = extension_dir()
    path = os.path.join(root or "", f"v{duckdb.__version__}", platform(), f"{name}.duckdb_extension")
    if root is None or not os.path.isfile(path):
        raise RuntimeError(
            f"DuckDB extension '{name}' for duckdb {duckdb.__version__} on {platform()} is not installed "
            f"(looked for {path}): pip install '{WHEELS[name]}==1.4.4.*' 'duckdb=={duckdb.__version__}' "
            "(the label store never downloads extensions)"
        )
    return path


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that loads extensions without checking their signatures: the binaries
    come from the pip-installed wheels, as trusted as duckdb itself, and the check costs a
    noticeable time per extension on every connection (the store opens one per operation;
    README: Performance)."""
    return duckdb.connect(config={"allow_unsigned_extensions": True})
