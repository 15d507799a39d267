"""Where a store's catalog lives, and DuckDB connections that attach it as `lake`.

`catalog=` (every entry point that opens a store has it):
- empty: the catalog the store was created with (its folder's `catalog.json` says), or for a
  new store a SQLite file `catalog.sqlite` in the store's folder: nothing to start, and
  many processes may read and write it.
- `postgres:<libpq string>`, e.g. `postgres:dbname=labels host=head user=labelgen`: for a
  cluster and many writers. Put the password in ~/.pgpass or PGPASSWORD, not here: the
  string is written into the store's `catalog.json` so that later commands find it.
- `sqlite:<path>`: a SQLite file elsewhere (relative paths: in the store's folder).

A SQLite file cannot live on S3, so an `s3://` store without `catalog=` keeps its catalog
in a SQLite file on the machine that created it ($XDG_CACHE_HOME or ~/.cache, then
labelgen/catalogs/), with a
warning: only that machine (the Ray head, where jobs run their drivers) can commit to or
read the store. Use a PostgreSQL catalog to share it.

Data files live under the store: Ray tasks write a run's Parquet files there, and the
driver registers them in one transaction (`LabelStore.commit`). The catalog records
where they are; a store whose folder was copied or moved is found at its new place
(`relocate`): its own SQLite catalog is pointed there on open, a shared one (PostgreSQL,
a SQLite file elsewhere) by `python -m labelgen.store relocate`, which the error says.
"""

import json
import logging
import os
import re
import sqlite3
import time
from contextlib import closing, contextmanager

import duckdb

from ..errors import MissingInput, UsageError
from ..io import DiskFull, Fault, exists, filesystem, is_remote, join, read_bytes, write_bytes
from . import extensions

log = logging.getLogger(__name__)
MARKER = "catalog.json"
# SQLite admits one writer at a time; a losing transaction fails whole and leaves nothing. Without
# DuckLake's own retry a commit that lost to one on other tables fails on the snapshot's key instead
CONFLICT = re.compile(
    r"database is locked|busy|conflict|could not serialize|deadlock|"
    r'duplicate key value violates unique constraint "ducklake_|UNIQUE constraint failed: ducklake_',
    re.IGNORECASE,
)
FULL = re.compile(r"no space left|disk is full|could not extend file", re.IGNORECASE)  # SQLite, DuckDB, PostgreSQL
# a PostgreSQL catalog's server restarting or away: the whole transaction is tried again
UNREACHABLE = re.compile(
    r"unable to connect to postgres|connection refused|server closed the connection|"
    r"terminating connection|no connection to the server",
    re.IGNORECASE,
)
# DuckLake refuses a DATA_PATH other than the one its catalog recorded: the store was copied or moved
MOVED = re.compile(r'DATA_PATH parameter "[^"]*" does not match existing data path in the catalog "(?P<old>[^"]*)"')
ATTEMPTS = 12  # about 15 s of backoff after conflicts, 30 s while the server is unreachable
BUSY_TIMEOUT_MS = 10_000


def _public(spec: str) -> str:
    """The catalog string without a password, as written into catalog.json."""
    return re.sub(r"\s*password=\S+", "", spec)


def default_catalog(uri: str) -> str:
    if not is_remote(uri):
        return "sqlite:catalog.sqlite"
    name = re.sub(r"[^\w.-]+", "_", uri.split("://", 1)[1].strip("/"))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser(os.path.join("~", ".cache"))
    path = os.path.join(cache, "labelgen", "catalogs", f"{name}.sqlite")
    log.warning(
        "store %s: its catalog is the SQLite file %s on this machine; only this machine can use the store. "
        "For a cluster, give every command catalog=postgres:<libpq string> (README: the label store).",
        uri,
        path,
    )
    return f"sqlite:{path}"


def resolve_catalog(uri: str, catalog: str | None, create: bool) -> str:
    """The catalog string to attach: the given one, else the one the store was created
    with, else (creating) the default; a store of an older labelgen is refused."""
    marker = join(uri, MARKER)
    recorded = json.loads(read_bytes(marker))["catalog"] if exists(marker) else None
    if catalog and recorded and _public(catalog) != recorded:
        raise UsageError(
            f"store {uri} was created with catalog={recorded}, not catalog={_public(catalog)}: "
            f"drop catalog= or give that one"
        )
    if recorded is None and not create:
        if exists(join(uri, "commits")) or exists(join(uri, "runs")):
            raise MissingInput(
                f"{uri} is a label store of an older labelgen (commit records, no catalog): "
                f"copy it into a new one with `python -m labelgen.store migrate {uri} NEW`"
            )
        raise MissingInput(f"no label store at {uri} (no {MARKER}); run `python -m labelgen.run store={uri}` first")
    spec = catalog or recorded or default_catalog(uri)
    kind = spec.split(":", 1)[0]
    if kind not in ("sqlite", "postgres") or ":" not in spec:
        raise UsageError(
            f"catalog={spec}: give postgres:<libpq string> (e.g. postgres:dbname=labels host=head), "
            "sqlite:<file>, or nothing for catalog.sqlite in the store's folder"
        )
    sqlite = sqlite_file(uri, spec)
    if recorded is None and sqlite and os.path.exists(sqlite) and not _begun_here(sqlite, uri):
        raise UsageError(
            f"store {uri} is new (no {MARKER}) but its catalog {sqlite} already exists, with the files of "
            "another store: remove that file, or give another catalog="
        )
    return spec


def _begun_here(sqlite: str, uri: str) -> bool:
    """Is this SQLite catalog one that this store's creation began (cut short before its
    catalog.json): no DuckLake metadata yet, or the store's own data path?"""
    with closing(sqlite3.connect(f"file:{sqlite}?mode=ro", uri=True)) as db:
        try:
            row = db.execute("SELECT value FROM ducklake_metadata WHERE key = 'data_path'").fetchone()
        except sqlite3.OperationalError:  # no DuckLake tables: ATTACH was cut short
            return True
    return row is not None and row[0].rstrip("/") == data_path(uri)


def data_path(uri: str) -> str:
    """The folder of the store's data files, as its catalog records it (DuckLake's DATA_PATH)."""
    return join(uri if is_remote(uri) else filesystem(uri)[1], "lake")


def mark_created(uri: str, catalog: str | None):
    """Write the store's catalog.json: its catalog, tables and views exist. Until then no
    reader finds a store there, and the next writer completes what a cut-short one began."""
    if not exists(join(uri, MARKER)):
        record_catalog(uri, resolve_catalog(uri, catalog, create=True))


def record_catalog(uri: str, spec: str):
    """Name `spec` in the store's catalog.json as the catalog that later commands use."""
    write_bytes(join(uri, MARKER), json.dumps({"catalog": _public(spec)}).encode())


def sqlite_file(uri: str, spec: str) -> str | None:
    """The local path of a SQLite catalog (None for PostgreSQL)."""
    kind, rest = spec.split(":", 1)
    if kind != "sqlite":
        return None
    rest = os.path.expanduser(rest)
    if os.path.isabs(rest):
        return rest
    if is_remote(uri):
        raise UsageError(
            f"catalog={spec}: a SQLite catalog cannot live on S3 ({uri}); give an absolute local path "
            "or postgres:<libpq string>"
        )
    return os.path.join(uri, rest)


def _s3_setup() -> list[str]:
    """S3 credentials from the AWS default chain; AWS_ENDPOINT_URL(_S3) for S3-compatible servers."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options = [f"REGION '{region}'"]
    if endpoint:
        scheme, host = endpoint.split("://", 1) if "://" in endpoint else ("https", endpoint)
        options += [f"ENDPOINT '{host.rstrip('/')}'", "URL_STYLE 'path'", f"USE_SSL {str(scheme == 'https').lower()}"]
    return [
        f"CREATE OR REPLACE SECRET labelgen_s3 (TYPE s3, PROVIDER credential_chain, {', '.join(options)})",
        # throttling and dropped connections: as labelgen.io, retry with backoff
        "SET http_retries = 8",
        "SET http_retry_wait_ms = 200",
        "SET http_retry_backoff = 2",
    ]


def statements(uri: str, spec: str, *, read_only: bool = False, snapshot: int | None = None) -> list[str]:
    """The SQL that attaches the store as `lake` in any DuckDB 1.4.4, the CLI included
    (`python -m labelgen.store attach` prints it): extensions from the installed wheels,
    S3 credentials, ATTACH, USE."""
    names = ["ducklake", "sqlite_scanner" if spec.startswith("sqlite:") else "postgres_scanner"]
    names += ["httpfs", "aws"] if is_remote(uri) else []
    sql = [f"LOAD '{extensions.extension_path(n)}'" for n in names]
    sql += _s3_setup() if is_remote(uri) else []
    options = ["READ_ONLY"] if read_only else []
    if snapshot is not None:
        options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
    options.append(f"DATA_PATH '{data_path(uri)}/'")
    sqlite = sqlite_file(uri, spec)
    if sqlite:  # WAL (a writer sets it, it stays): readers and a writer never block each other;
        # writers wait for each other, then retry whole
        options += [] if read_only else ["META_JOURNAL_MODE 'WAL'"]
        options.append(f"META_BUSY_TIMEOUT {BUSY_TIMEOUT_MS}")
    target = f"ducklake:sqlite:{sqlite}" if sqlite else f"ducklake:{spec}"
    # conflicts come back to `retrying`, which redoes the whole transaction: DuckLake's own retry
    # of a failed commit once left a PostgreSQL catalog whose registered files named column
    # mappings it no longer had (1 of 14 two-writer trials; unreadable after)
    sql.append("SET ducklake_max_retry_count = 0")
    return [*sql, f"ATTACH '{target}' AS lake ({', '.join(options)})", "USE lake"]


def attach(
    uri: str, catalog: str | None = None, *, read_only: bool = False, snapshot: int | None = None, create: bool = False
) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB with the store attached as `lake` (and selected)."""
    spec = resolve_catalog(uri, catalog, create)
    sqlite = sqlite_file(uri, spec)
    if sqlite and create:
        os.makedirs(os.path.dirname(sqlite), exist_ok=True)
    con = _duckdb()
    try:
        for sql in statements(uri, spec, read_only=read_only, snapshot=snapshot):
            con.execute(sql)
    except duckdb.Error as e:
        con.close()
        if is_conflict(e) or UNREACHABLE.search(str(e)):
            raise  # a writer's lock, a server restarting: the caller's retry waits it out
        if moved := MOVED.search(str(e)):
            if not own_catalog(uri, spec):
                raise UsageError(moved_message(uri, spec, moved["old"])) from None
            log.warning("store %s was copied or moved from %s: its catalog now points here", uri, root_of(moved["old"]))
            relocate(uri, spec)
            return attach(uri, catalog, read_only=read_only, snapshot=snapshot, create=create)
        what = "snapshot " + str(snapshot) + " of " if snapshot is not None else ""
        raise RuntimeError(f"could not open {what}the catalog {_public(spec)} of store {uri}: {e}") from None
    return con


def _duckdb() -> duckdb.DuckDBPyConnection:
    con = extensions.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    return con


def root_of(path: str) -> str:
    """The store folder of a data path (`<store>/lake/`), with a trailing slash."""
    return path.rstrip("/").removesuffix("/lake") + "/"


def own_catalog(uri: str, spec: str) -> bool:
    """Is the catalog a SQLite file in the store's own folder, which moves and copies with it?"""
    sqlite = not is_remote(uri) and sqlite_file(uri, spec)
    return bool(sqlite) and os.path.commonpath([sqlite, uri]) == uri


def moved_message(uri: str, spec: str, old: str) -> str:
    old_root = root_of(old).rstrip("/")
    fix = f"python -m labelgen.store relocate store={uri}"
    if exists(join(old_root, MARKER)):
        return (
            f"store {uri} is a copy of {old_root}, and both name the catalog {_public(spec)}, which records the "
            f"data at {old_root}. Give the copy a catalog of its own: copy the catalog (PostgreSQL: "
            f"createdb -T OLD NEW; SQLite: cp), then `{fix} catalog=<the copy>`"
        )
    return (
        f"store {uri} was moved from {old_root}, and its catalog {_public(spec)} still records the data there: "
        f"`{fix}` points the catalog here"
    )


# DuckLake's tables of paths: absolute ones (`path_is_relative` false) name the store's folder
PATH_TABLES = (
    "ducklake_schema",
    "ducklake_table",
    "ducklake_data_file",
    "ducklake_delete_file",
    "ducklake_files_scheduled_for_deletion",
)


def relocate(uri: str, spec: str) -> tuple[str, int]:
    """Point the catalog `spec` at the store's place `uri`: DuckLake's data path, and every file
    path it recorded under the old store folder, in one transaction of the catalog's own
    database. Returns the old store folder and how many paths changed."""
    sqlite = sqlite_file(uri, spec)
    con = _duckdb()
    try:
        con.execute(f"LOAD '{extensions.extension_path('sqlite_scanner' if sqlite else 'postgres_scanner')}'")
        target = sqlite or spec.split(":", 1)[1]
        con.execute(f"ATTACH '{target}' AS meta (TYPE {'sqlite' if sqlite else 'postgres'})")
        old = con.execute("SELECT value FROM meta.ducklake_metadata WHERE key = 'data_path'").fetchone()
        if old is None:
            raise UsageError(f"catalog {_public(spec)} holds no DuckLake metadata: give the catalog of store {uri}")
        old_root, new_root = root_of(old[0]), root_of(data_path(uri))
        changed = 0
        with transaction(con):
            con.execute("UPDATE meta.ducklake_metadata SET value = ? WHERE key = 'data_path'", [data_path(uri) + "/"])
            for table in PATH_TABLES:
                changed += con.execute(
                    f"UPDATE meta.{table} SET path = ? || path[length(?) + 1:] "
                    "WHERE NOT path_is_relative::BOOLEAN AND starts_with(path, ?)",
                    [new_root, old_root, old_root],
                ).fetchone()[0]
    finally:
        con.close()
    return old_root, changed


def is_conflict(e: Exception) -> bool:
    return isinstance(e, duckdb.Error) and bool(CONFLICT.search(str(e)))


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection):
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the failed COMMIT already ended it
        raise


class CatalogUnreachable(Fault):
    """The catalog's server did not answer through every retry."""


def retrying(what: str, attempt, committed=lambda: False):
    """attempt() (one whole transaction), again after a lock conflict or while the catalog's
    server is unreachable, unless committed() says the failed try did commit after all;
    backoff 0.05 s doubling to 2 s (5 s for the server)."""
    t0 = time.monotonic()
    for n in range(ATTEMPTS):
        try:
            return attempt()
        except duckdb.Error as e:
            first = str(e).splitlines()[0]
            if FULL.search(str(e)):
                raise DiskFull(
                    f"{what}: the catalog's disk is full ({first}); free space where the catalog lives, "
                    "then run the same command again: a run resumes with its run_id"
                ) from None
            away = bool(UNREACHABLE.search(str(e)))
            if away and n == ATTEMPTS - 1:
                raise CatalogUnreachable(
                    f"{what}: the catalog's server did not answer for {time.monotonic() - t0:.0f} s "
                    f"({first}); start it or mend the network, then run the same command again: a "
                    "run resumes with its run_id"
                ) from None
            if n == ATTEMPTS - 1 or not (away or is_conflict(e)):
                raise
            if _landed(committed):
                return None
            log.info("%s: %s; trying again (%d of %d)", what, first, n + 2, ATTEMPTS)
            time.sleep(min(5.0 if away else 2.0, 0.05 * 2**n))


def _landed(committed) -> bool:
    """Whether a failed try committed after all; unknown (so: no) while the server is away."""
    try:
        return committed()
    except (duckdb.Error, CatalogUnreachable):
        return False
