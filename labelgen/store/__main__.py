"""Label store administration.

    python -m labelgen.store migrate OLD NEW [catalog=C]
        copy a store of an older labelgen (JSON commit records) into a new store NEW
    python -m labelgen.store maintain [store=labelstore] [catalog=C] [older_than_days=7]
        compact small files, expire old snapshots (not those a model pinned), delete unused files
    python -m labelgen.store check [store=labelstore] [catalog=C]
        check that the catalog and every table read and that no data file is missing or damaged
    python -m labelgen.store repair [store=labelstore] [catalog=C]
        mend a catalog that `check` found damaged (data files naming column maps their table lacks)
    python -m labelgen.store relocate [store=labelstore] [catalog=C]
        point a moved or copied store's catalog (or, with catalog=, a copy of it) at its new place
    python -m labelgen.store attach [store=labelstore] [catalog=C] [at=SNAPSHOT]
        print the SQL that opens the store (read-only) in any DuckDB 1.4.4, e.g. the CLI:
        duckdb -cmd "$(python -m labelgen.store attach)"
    python -m labelgen.store config RUN [store=labelstore] [catalog=C]
        print the config run RUN was started with, as YAML: python -m labelgen.run config=FILE.yaml replays it

`python -m labelgen.store COMMAND --help` shows a command's keys.
"""

import sys
from dataclasses import dataclass

from omegaconf import OmegaConf

from ..cli import run_command
from ..config import ConfigError, StoreConf
from ..errors import UsageError
from ..io import exists, join
from .catalog import MARKER, record_catalog, relocate, resolve_catalog, statements
from .check import check, describe, repair
from .lake import LabelStore
from .maintain import maintain
from .migrate import migrate


@dataclass
class MigrateConf:
    catalog: str | None = None  # the new store's catalog: postgres:<libpq string> | sqlite:<file>; none: catalog.sqlite
    # in NEW


@dataclass
class MaintainConf(StoreConf):
    older_than_days: float = 7.0  # expire snapshots, and delete files unused, this long


@dataclass
class AttachConf(StoreConf):
    at: int | None = None  # open the store as it was at this snapshot; default: the latest


def copy_old_store(conf, words: list[str]) -> int:
    """Copy a store of an older labelgen (runs/, commits/, models/, spheres/ as JSON
    records) into a new store: committed runs with their labels, the other runs'
    records, models and spherical mappers with their weights. The old store is only
    read; its feature cache is not copied. OLD is a folder or s3://bucket/prefix; NEW
    must not exist yet."""
    if len(words) != 2:
        raise ConfigError("migrate takes OLD NEW: the old store and the new one")
    old, new = words
    s = migrate(old, new, conf.catalog)
    print(
        f"migrated {s['runs']} runs ({s['committed']} committed, {s['failed']} failed, {s['incomplete']} "
        f"incomplete), {s['labels']:,} labels, {s['models']} models, {s['spheres']} spherical mappers "
        f"in {s['seconds']:.1f} s into {new}"
    )
    return 0


def compact(conf) -> int:
    """Merge small data files, expire snapshots older than older_than_days (never the
    latest, nor one a model pinned), and delete the files that were scheduled for
    deletion at least that long ago. Runs and readers may go on meanwhile."""
    s = maintain(LabelStore(conf.store, conf.catalog), conf.older_than_days)
    print(
        f"data files {s['files_before']} -> {s['files_after']}, {s['snapshots_expired']} snapshots expired, "
        f"{len(s['kept_pinned'])} kept for models, {s['files_deleted']} files deleted"
    )
    return 0


def existing(conf) -> LabelStore:
    store = LabelStore(conf.store, conf.catalog)
    resolve_catalog(store.uri, store.catalog, create=False)  # no store there: said as a usage error
    return store


def check_store(conf) -> int:
    """Open the catalog, read every table and view, and check every data file it lists:
    there, of the size it was registered with, with a Parquet footer. Names each bad
    file and its run, and what to do; exits 1 when anything is wrong. Read-only."""
    store = existing(conf)
    report = check(store)
    print(describe(store, report))
    return 1 if report["problems"] else 0


def repair_store(conf) -> int:
    """DuckLake 1.4's own commit retry can leave a commit's data files naming column
    maps of its first try, which a concurrent commit took (the store turns that retry
    off). Points each such file at the map its own commit wrote, in one transaction,
    then checks again. Stop writers first."""
    store = existing(conf)
    done = repair(store)
    print(
        f"store {store}: {done['repaired']} data file(s) repaired"
        + (
            f"; {len(done['left'])} without a map of their commit: restore the catalog from a backup, or "
            "read an earlier snapshot (at=)"
            if done["left"]
            else ""
        )
    )
    return check_store(conf)


def relocate_store(conf) -> int:
    """Point the store's catalog at the store's folder after the folder was moved or copied
    (a catalog in the folder itself follows on its own; a PostgreSQL catalog, or a SQLite
    file elsewhere, needs this). With catalog=, that catalog (a copy of the old one, e.g.
    `createdb -T OLD NEW`) becomes the store's own first, and the original keeps its catalog;
    without it, the store's catalog moves here and the old place stops opening."""
    store = LabelStore(conf.store)
    if not exists(join(store.uri, MARKER)):
        resolve_catalog(store.uri, None, create=False)  # no store there: said as a usage error
    spec = conf.catalog or resolve_catalog(store.uri, None, create=False)
    old, changed = relocate(store.uri, spec)
    if conf.catalog:
        record_catalog(store.uri, conf.catalog)
    print(f"store {store}: catalog points here (was {old.rstrip('/')}); {changed} file paths rewritten")
    return 0


def attach_sql(conf) -> int:
    """Print the statements that load the extensions from the installed wheels, set up
    S3 credentials (the AWS chain) where the store is on S3, and attach the store
    read-only as `lake`, e.g. for the DuckDB CLI: duckdb -cmd "$(python -m labelgen.store attach)"."""
    store = LabelStore(conf.store, conf.catalog)
    spec = resolve_catalog(store.uri, store.catalog, create=False)
    print(";\n".join(statements(store.uri, spec, read_only=True, snapshot=conf.at)) + ";")
    return 0


def run_config(conf, words: list[str]) -> int:
    """Print the config run RUN was started with, as YAML (its catalog left out): write it to
    a file and give it back to labelgen.run as config=FILE.yaml to label with it again
    (with run_id= for a new run; key=value arguments override the file's keys)."""
    if len(words) != 1:
        raise ConfigError("config takes RUN: the run whose config to print (python -m queries runs lists them)")
    record = existing(conf).run_record(words[0])
    if record is None:
        raise UsageError(f"store {conf.store} has no run {words[0]} (python -m queries runs lists them)")
    print(OmegaConf.to_yaml(OmegaConf.create(record["config"])), end="")
    return 0


COMMANDS = {  # name -> defaults, what it does, its positional words
    "migrate": (MigrateConf, copy_old_store, "OLD NEW"),
    "maintain": (MaintainConf, compact, None),
    "check": (StoreConf, check_store, None),
    "repair": (StoreConf, repair_store, None),
    "relocate": (StoreConf, relocate_store, None),
    "attach": (AttachConf, attach_sql, None),
    "config": (StoreConf, run_config, "RUN"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        helped = bool(argv) and argv[0] in ("-h", "--help")
        print(
            __doc__.strip() if helped else f"error: name a command: {', '.join(COMMANDS)} (see --help)",
            file=sys.stdout if helped else sys.stderr,
        )
        return 0 if helped else 2
    defaults, body, words = COMMANDS[argv[0]]
    return run_command(defaults, body, argv[1:], words=words, command=argv[0], announce=False)


if __name__ == "__main__":
    sys.exit(main())
