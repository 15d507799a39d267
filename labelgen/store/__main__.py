"""Label store administration.

    python -m labelgen.store migrate OLD NEW [--catalog C]
        copy a store of an older labelgen (JSON commit records) into a new store NEW
    python -m labelgen.store maintain [--store labelstore] [--catalog C] [--older-than-days 7]
        compact small files, expire old snapshots (not those a model pinned), delete unused files
    python -m labelgen.store check [--store labelstore] [--catalog C]
        check that the catalog and every table read and that no data file is missing or damaged
    python -m labelgen.store repair [--store labelstore] [--catalog C]
        mend a catalog that `check` found damaged (data files naming column maps their table lacks)
    python -m labelgen.store attach [--store labelstore] [--catalog C] [--at SNAPSHOT]
        print the SQL that opens the store (read-only) in any DuckDB 1.4.4, e.g. the CLI:
        duckdb -cmd "$(python -m labelgen.store attach)"

`python -m labelgen.store COMMAND --help` shows a command's options.
"""

import argparse
import sys

from ..cli import USAGE_ERRORS, HelpFormatter
from .catalog import resolve_catalog, statements
from .check import check, describe, repair
from .lake import LabelStore
from .maintain import maintain
from .migrate import migrate

CATALOG_HELP = "the catalog: postgres:<libpq string> or sqlite:<file> (default: {})"


def store_options(command: argparse.ArgumentParser):
    """--store and --catalog, for the commands on an existing store."""
    command.add_argument("--store", metavar="URI", default="labelstore", help="the store: a folder or s3://bucket/prefix")
    command.add_argument("--catalog", metavar="C", default=argparse.SUPPRESS,
                         help=CATALOG_HELP.format("the store's own, catalog.json"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m labelgen.store", description=__doc__, formatter_class=HelpFormatter)
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    m = commands.add_parser("migrate", help="copy an older labelgen's store into a new store", formatter_class=HelpFormatter,
                            description="Copy a store of an older labelgen (runs/, commits/, models/, spheres/ as JSON\n"
                                        "records) into a new store: committed runs with their labels, the other runs'\n"
                                        "records, models and spherical mappers with their weights. The old store is only\n"
                                        "read; its feature cache is not copied.")
    m.add_argument("old", metavar="OLD", help="the old store: a folder or s3://bucket/prefix")
    m.add_argument("new", metavar="NEW", help="the new store, which must not exist yet")
    m.add_argument("--catalog", metavar="C", default=argparse.SUPPRESS, help=CATALOG_HELP.format("catalog.sqlite in NEW"))
    t = commands.add_parser("maintain", help="compact files, expire old snapshots, delete unused files",
                            formatter_class=HelpFormatter,
                            description="Merge small data files, expire snapshots older than --older-than-days (never\n"
                                        "the latest, nor one a model pinned), and delete the files that were scheduled\n"
                                        "for deletion at least that long ago. Runs and readers may go on meanwhile.")
    store_options(t)
    t.add_argument("--older-than-days", metavar="DAYS", type=float, default=7.0,
                   help="expire snapshots, and delete files unused, this long")
    c = commands.add_parser("check", help="check that the catalog, every table and every data file read",
                            formatter_class=HelpFormatter,
                            description="Open the catalog, read every table and view, and check every data file it lists:\n"
                                        "there, of the size it was registered with, with a Parquet footer. Names each bad\n"
                                        "file and its run, and what to do; exits 1 when anything is wrong. Read-only.")
    store_options(c)
    r = commands.add_parser("repair", help="mend data files that name column maps their table lacks",
                            formatter_class=HelpFormatter,
                            description="DuckLake 1.4's own commit retry can leave a commit's data files naming column\n"
                                        "maps of its first try, which a concurrent commit took (the store turns that retry\n"
                                        "off). Points each such file at the map its own commit wrote, in one transaction,\n"
                                        "then checks again. Stop writers first.")
    store_options(r)
    o = commands.add_parser("attach", help="print the SQL that opens the store in the DuckDB CLI", formatter_class=HelpFormatter,
                            description="Print the statements that load the extensions from the installed wheels, set up\n"
                                        "S3 credentials (the AWS chain) where the store is on S3, and attach the store\n"
                                        "read-only as `lake`: duckdb -cmd \"$(python -m labelgen.store attach)\"")
    store_options(o)
    o.add_argument("--at", metavar="SNAPSHOT", type=int, help="open the store as it was at this snapshot")
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        if a.command == "migrate":
            s = migrate(a.old, a.new, getattr(a, "catalog", None))
            print(f"migrated {s['runs']} runs ({s['committed']} committed, {s['failed']} failed, {s['incomplete']} "
                  f"incomplete), {s['labels']:,} labels, {s['models']} models, {s['spheres']} spherical mappers "
                  f"in {s['seconds']:.1f} s into {a.new}")
        elif a.command == "attach":
            store = LabelStore(a.store, getattr(a, "catalog", None))
            spec = resolve_catalog(store.uri, store.catalog, create=False)
            print(";\n".join(statements(store.uri, spec, read_only=True, snapshot=a.at)) + ";")
        elif a.command in ("check", "repair"):
            store = LabelStore(a.store, getattr(a, "catalog", None))
            resolve_catalog(store.uri, store.catalog, create=False)  # no store there: said as a usage error
            if a.command == "repair":
                done = repair(store)
                print(f"store {store}: {done['repaired']} data file(s) repaired"
                      + (f"; {len(done['left'])} without a map of their commit: restore the catalog from a backup, or "
                         "read an earlier snapshot (--at)" if done["left"] else ""))
            report = check(store)
            print(describe(store, report))
            return 1 if report["problems"] else 0
        else:
            s = maintain(LabelStore(a.store, getattr(a, "catalog", None)), a.older_than_days)
            print(f"data files {s['files_before']} -> {s['files_after']}, {s['snapshots_expired']} snapshots expired, "
                  f"{len(s['kept_pinned'])} kept for models, {s['files_deleted']} files deleted")
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
