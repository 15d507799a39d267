"""The label store: a DuckLake (a SQL catalog over Parquet files) with tables label_history,
label_pairs, images, bad_inputs, run_stats, spheres and the logs behind the views runs and
models; the view labels shows the current labels (schema.py says which).

Layout under the store URI (a local folder or s3://bucket/prefix):

    catalog.json                                      which catalog the store was created with; written last
    catalog.sqlite                                    the default catalog (catalog.py says which others)
    runs/<run>/labels/category=<c>/part-<p>.parquet    labels of a vote partition of a category, written by its Ray task
    runs/<run>/pairs/category=<c>/part-<p>.parquet     the image pairs that partition examined, with their label counts
    runs/<run>/pairs/category=<c>/retracted.parquet    pairs of replaced images it did not examine: 0 labels now
    runs/<run>/replaced.parquet                       images whose file changed since their features were cached
    runs/<run>/images/category=<c>.parquet             the category's images, n_fg; the chains' counts and partitions
    lake/main/<table>/...                             files DuckLake writes itself (compaction, inserts)
    models/<id>/adapter.pt, spheres/<id>/mapper.pt    weights; their rows live in the catalog
    features/<backbone fingerprint>/...               the feature cache

Why this shape: workers share no disk and S3 has no rename, so tasks write their own
files under deterministic names (a retried task overwrites its own file) and never
open the catalog. The driver then registers a run's files and inserts its rows in one
DuckLake transaction: a reader, this project's or any DuckDB's, sees all of a run or
none of it, a killed run leaves nothing visible, and each commit is a snapshot that a
trained model can pin and a query can go back to.
"""

import os
import subprocess

import pyarrow as pa

from .. import __version__
from ..io import is_remote, join, write_bytes
from . import catalog as cat
from .connections import Connections, insert_log, now, records
from .files import RunFiles
from .schema import BAD_INPUT_SCHEMA, COMMIT_MESSAGE

__all__ = ["LabelStore", "now"]  # now: benchmarks import it from here


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


class LabelStore(Connections):
    """A label store at `uri` (local folder or s3://bucket/prefix), its catalog `catalog` (catalog.py):
    connections and snapshots (connections.py); the run log and the commit; models and spheres.
    A run's files are `files(run_id)` (files.py): what its tasks get instead of the store."""

    def __init__(self, uri: str, catalog: str | None = None):
        uri = str(uri)
        super().__init__(uri.rstrip("/") if is_remote(uri) else os.path.abspath(os.path.expanduser(uri)), catalog)

    def __str__(self):
        return self.uri

    def files(self, run_id: str) -> RunFiles:
        return RunFiles(self.uri, run_id)

    def feature_cache(self, cache: str | None = None) -> str:
        """The feature cache's root: `cache` (a run's features.cache) when given, else features/ in the store."""
        return cache or join(self.uri, "features")

    # runs: run_log gets a row per state of a run (incomplete, failed, committed) and the view runs
    # shows the latest; the commit makes a run visible in one transaction: a reader sees all of it
    # or none, and each commit is a snapshot

    def run_record(self, run_id: str) -> dict | None:
        rows = self.rows("FROM lake.run_log WHERE run_id = ? ORDER BY logged DESC LIMIT 1", [run_id])
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
        self.append("run_log", {**record, "logged": now()})
        return record

    def update_run(self, run_id: str, **fields):
        record = self.run_record(run_id) or {"run_id": run_id}
        self.append("run_log", {**record, **fields, "logged": now()})

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
        files = self.files(run_id)
        label_files, image_files, pair_files = (files.staged(kind) for kind in ("labels", "images", "pairs"))
        stats = files.run_stats(label_files)
        bad = pa.Table.from_pylist([{**b, "run_id": run_id} for b in bad_inputs], schema=BAD_INPUT_SCHEMA)
        record = {
            **(self.run_record(run_id) or {"run_id": run_id}),
            "status": "committed",
            "finished": now(),
            "counts": counts,
            "error": None,
        }

        def attempt():
            with self.writer() as con, cat.transaction(con):
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

    def retract_replaced(self, run_id: str, images: set[str], before: str) -> int:
        """Supersede the current labels made on the old features of replaced `images`: each
        current pair with one of them, of a run committed before `before` (this run's start),
        that this run did not examine again (RunFiles.retract)."""
        replaced = pa.table({"image_id": pa.array(sorted(images), pa.string())})

        def current(con):
            con.register("replaced", replaced)
            return con.execute(
                "SELECT c.category, c.src_image_id, c.tgt_image_id FROM lake.current_pairs c JOIN lake.runs r USING "
                "(run_id) WHERE c.labels > 0 AND r.finished < ?::TIMESTAMP AND (c.src_image_id IN (FROM replaced) "
                "OR c.tgt_image_id IN (FROM replaced))",
                [before],
            ).fetch_arrow_table()

        return self.files(run_id).retract(self.session("labels of replaced images in", current))

    # models and spheres: weights under the store, a row each in the catalog. model_log gets a row
    # per state of a model (trained, decided) and the view models shows the latest; a sphere's row
    # is written once. A row's `checkpoint` says where its weights were written; records read back
    # name them where the store is now, so a copied or moved store loads its own

    def model_uri(self, model_id: str, name: str) -> str:
        return join(self.uri, "models", model_id, name)

    def save_model(self, record: dict, weights: bytes | None = None) -> dict:
        if weights is not None:
            write_bytes(self.model_uri(record["model_id"], "adapter.pt"), weights)
            record = {**record, "checkpoint": self.model_uri(record["model_id"], "adapter.pt")}
        self.append("model_log", {**record, "logged": now()})
        return record

    def models(self) -> list[dict]:
        """Model records, oldest first; `status`: the latest promotion is 'promoted', earlier
        ones 'retired', others 'rejected' or (undecided) 'training'."""
        return [
            {**r, "checkpoint": r["checkpoint"] and self.model_uri(r["model_id"], "adapter.pt")}
            for r in self.rows("FROM lake.models ORDER BY created")
        ]

    def promoted_model(self) -> dict | None:
        return next((r for r in self.models() if r["status"] == "promoted"), None)

    def model(self, name: str) -> dict | None:
        """The model `name` names: `latest` (the last decided: promoted, retired or rejected),
        `promoted`, or a model id; None when there is none, or it has no weights to load."""
        if name == "promoted":
            record = self.promoted_model()
        elif name == "latest":
            record = next((m for m in reversed(self.models()) if m["status"] != "training"), None)
        else:
            record = next((m for m in self.models() if m["model_id"] == name), None)
        return record if record and record.get("checkpoint") else None

    def save_sphere(self, record: dict, weights: bytes) -> dict:
        """A trained spherical mapper: weights, then its row (the row makes it visible)."""
        uri = self.sphere_uri(record["sphere_id"])
        write_bytes(uri, weights)
        record = {**record, "checkpoint": uri}
        self.append("spheres", record)
        return record

    def sphere_uri(self, sphere_id: str) -> str:
        return join(self.uri, "spheres", sphere_id, "mapper.pt")

    def spheres(self) -> list[dict]:
        """Spherical mapper records, oldest first."""
        return [
            {**r, "checkpoint": self.sphere_uri(r["sphere_id"])}
            for r in self.rows("FROM lake.spheres ORDER BY created")
        ]
