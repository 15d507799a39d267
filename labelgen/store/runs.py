"""The run log and the commit. run_log gets a row per state of a run (incomplete, failed,
committed) and the view runs shows the latest; the commit makes a run visible in one
transaction: a reader sees all of it or none, and each commit is a snapshot."""

import os
import subprocess

import pyarrow as pa

from .. import __version__
from . import catalog as cat
from .connections import insert_log, now, records
from .schema import BAD_INPUT_SCHEMA, COMMIT_MESSAGE


def code_version() -> str:
    """The package version, and the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=os.path.dirname(__file__),
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


class Runs:
    """LabelStore's runs: their log, what committed runs labelled, and the commit."""

    def run_record(self, run_id: str) -> dict | None:
        rows = self._rows("FROM lake.run_log WHERE run_id = ? ORDER BY logged DESC LIMIT 1", [run_id])
        return rows[0] if rows else None

    def begin_run(self, record: dict) -> dict:
        """Log the run as started, or return the record a previous attempt logged (resume)."""
        previous = self.run_record(record["run_id"])
        if previous is not None:
            return previous
        record = {
            **record,
            "status": "incomplete",
            "started": now(),
            "code_version": code_version(),
            # the features its labels are made on: the backbone's unless the run says (labels.features)
            "label_features": record.get("label_features") or record.get("backbone_fingerprint"),
        }
        self._append("run_log", {**record, "logged": now()})
        return record

    def update_run(self, run_id: str, **fields):
        record = self.run_record(run_id) or {"run_id": run_id}
        self._append("run_log", {**record, **fields, "logged": now()})

    def fail_run(self, run_id: str, error: str):
        self.update_run(run_id, status="failed", error=error, finished=now())

    def is_committed(self, run_id: str) -> bool:
        return (self.run_record(run_id) or {}).get("status") == "committed"

    def latest_run(self, run_id: str | None = None, current: bool = True) -> dict | None:
        """The runs row of committed run `run_id`, default the latest committed run that holds
        current labels (a repeated run that labelled nothing holds none), or with current=False
        the latest committed run; None when there is none."""
        rows = self.session(
            "latest run of",
            lambda con: records(
                con.execute(
                    "FROM lake.runs WHERE status = 'committed' AND (run_id = $run OR ($run IS NULL AND (NOT "
                    "$current OR run_id IN (SELECT run_id FROM lake.current_pairs WHERE labels > 0)))) ORDER BY "
                    "finished DESC LIMIT 1",
                    {"run": run_id, "current": current},
                )
            ),
        )
        return rows[0] if rows else None

    def labelled_images(self, label_features: str, label_hash: str, before: str) -> set[str]:
        """Images that took part in a tuple of a run with these label features and label config
        (runs.label_hash) committed before `before` (a run's start: every attempt of it sees the
        same): a run with the same ones has nothing new to do for them."""
        return {
            i
            for (i,) in self.session(
                "labelled images of",
                lambda con: con.execute(
                    "SELECT DISTINCT i.image_id FROM lake.images i JOIN lake.runs r USING (run_id) WHERE r.status = "
                    "'committed' AND r.label_features = ? AND r.label_hash = ? AND r.finished < ?::TIMESTAMP AND "
                    "i.n_fg IS NOT NULL",
                    [label_features, label_hash, before],
                ).fetchall(),
            )
        }

    def source_images(self) -> set[str]:
        """Images that are the source of at least one current label (from the pairs: no label is read)."""
        return {
            i
            for (i,) in self.session(
                "sources of",
                lambda con: con.execute(
                    "SELECT DISTINCT src_image_id FROM lake.current_pairs WHERE labels > 0"
                ).fetchall(),
            )
        }

    def commit(self, run_id: str, counts: dict, bad_inputs: list[dict]) -> dict:
        """Make the run visible in one transaction (one snapshot): register its label and image
        files, insert its bad inputs, per-category stats and committed state. A lock conflict
        retries the whole transaction, unless the failed try did commit."""
        label_files, image_files, pair_files = (self._staged(run_id, kind) for kind in ("labels", "images", "pairs"))
        stats = self._label_stats(run_id, label_files)
        bad = pa.Table.from_pylist([{**b, "run_id": run_id} for b in bad_inputs], schema=BAD_INPUT_SCHEMA)
        record = {
            **(self.run_record(run_id) or {"run_id": run_id}),
            "status": "committed",
            "finished": now(),
            "counts": counts,
            "error": None,
        }

        def attempt():
            with self._writer() as con, cat.transaction(con):
                con.execute("CALL lake.set_commit_message('labelgen', ?, extra_info => ?)", [COMMIT_MESSAGE, run_id])
                for table, files in (
                    ("label_history", label_files),
                    ("label_pairs", pair_files),
                    ("images", image_files),
                ):
                    for f in files:
                        con.execute(f"CALL ducklake_add_data_files('lake', '{table}', ?)", [f])
                for table, rows in (("bad_inputs", bad), ("run_stats", stats)):
                    if len(rows):
                        con.register("new_rows", rows)
                        con.execute(f"INSERT INTO lake.{table} BY NAME SELECT * FROM new_rows")
                        con.unregister("new_rows")
                insert_log(con, "run_log", {**record, "logged": now()})

        cat.retrying(f"commit run {run_id}", attempt, committed=lambda: self.is_committed(run_id))
        return record
