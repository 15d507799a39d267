"""Housekeeping of a label store: fewer, larger files and no snapshots nobody needs.

Every run adds a label and an image file per category, and DuckLake keeps every
snapshot (and every file one of them refers to) forever. This compacts the small files
(time travel still works: a merged file records which snapshot added each row),
expires snapshots older than a threshold except the latest and those a model pinned
(the labels it was trained on stay readable with `connect(snapshot=...)`), and deletes
the files DuckLake scheduled for deletion at least that long ago, so that a reader
that listed files shortly before (a training job's workers) does not lose them.

The log tables' rows stay inlined in the catalog (no flush): flushing would write a
small file per table on every call, the very thing compaction removes. Files that no
snapshot ever registered (a run's staged, uncommitted files) are left alone: they are
what a resumed run picks up.
"""

from ..errors import UsageError
from .lake import LabelStore


def _files(con) -> dict[str, int]:
    """Data files the latest snapshot refers to, per table."""
    tables = [
        t
        for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' ORDER BY 1"
        ).fetchall()
    ]
    return {t: con.execute("SELECT count(*) FROM ducklake_list_files('lake', ?)", [t]).fetchone()[0] for t in tables}


def _expirable(con, older_than_days: float) -> tuple[list[int], list[int]]:
    """Snapshots older than the threshold, and those of them kept because a model pinned them."""
    rows = con.execute(
        """
        SELECT snapshot_id, snapshot_id IN (SELECT snapshot FROM lake.model_log WHERE snapshot IS NOT NULL) AS pinned
        FROM lake.snapshots()
        WHERE snapshot_time < now() - to_seconds(?) AND snapshot_id < (SELECT max(snapshot_id) FROM lake.snapshots())
        ORDER BY 1""",
        [older_than_days * 86400.0],
    ).fetchall()
    return [s for s, pinned in rows if not pinned], [s for s, pinned in rows if pinned]


def maintain(store: LabelStore, older_than_days: float, log=print) -> dict:
    """Compact, expire old unpinned snapshots, delete files scheduled for deletion
    `older_than_days` ago or more; returns what it did."""
    if older_than_days < 0:
        raise UsageError(f"older_than_days={older_than_days}: give 0 or more")
    before = store.session("count files of", _files)
    log(f"store {store}: {sum(before.values())} data files")
    store.session(
        "compact", lambda con: con.execute("CALL ducklake_merge_adjacent_files('lake')").fetchall(), read_only=False
    )
    after = store.session("count files of", _files)
    merged = [f"{t} {before.get(t, 0)} -> {n}" for t, n in after.items() if n != before.get(t, 0)]
    log(f"compacted: {', '.join(merged)}" if merged else "compacted: nothing to merge")

    def expire(con):
        expired, pinned = _expirable(con, older_than_days)
        if expired:
            con.execute(
                f"CALL ducklake_expire_snapshots('lake', versions => [{', '.join(map(str, expired))}])"
            ).fetchall()
        return expired, pinned

    expired, pinned = store.session("expire snapshots of", expire, read_only=False)
    log(
        f"expired {len(expired)} snapshots older than {older_than_days:g} days; kept {len(pinned)} pinned by models"
        + (f" ({', '.join(map(str, pinned))})" if pinned else "")
    )
    cutoff = f"now() - to_seconds({float(older_than_days) * 86400.0})"
    deleted = store.session(
        "delete old files of",
        lambda con: con.execute(f"CALL ducklake_cleanup_old_files('lake', older_than => {cutoff})").fetchall(),
        read_only=False,
    )
    waiting = store.session(
        "list scheduled files of",
        lambda con: con.execute(
            "CALL ducklake_cleanup_old_files('lake', dry_run => true, cleanup_all => true)"
        ).fetchall(),
        read_only=False,
    )
    log(
        f"deleted {len(deleted)} files no snapshot needs"
        + (f"; {len(waiting)} more wait until they are {older_than_days:g} days unused" if waiting else "")
    )
    return {
        "files_before": sum(before.values()),
        "files_after": sum(after.values()),
        "files": {t: (before.get(t, 0), n) for t, n in after.items()},
        "snapshots_expired": len(expired),
        "kept_pinned": pinned,
        "files_deleted": len(deleted),
        "files_waiting": len(waiting),
    }
