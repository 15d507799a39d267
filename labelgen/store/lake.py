"""The label store: a DuckLake (a SQL catalog over Parquet files) with tables label_history,
label_pairs, images, bad_inputs, run_stats, spheres and the logs behind the views runs and
models; the view labels shows the current labels (schema.py says which).

Layout under the store URI (a local folder or s3://bucket/prefix):

    catalog.json                                      which catalog the store was created with; written last
    catalog.sqlite                                    the default catalog (catalog.py says which others)
    runs/<run>/candidates/category=<c>/part-<p>/...   a chunk's candidate labels per vote partition (until the commit)
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

import json
import logging
import math
import os
import posixpath
import subprocess
from contextlib import contextmanager
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import __version__
from ..io import delete_dir, exists, filesystem, is_remote, join, list_files, read_bytes, write_bytes
from . import catalog as cat
from .check import damaged_files, damaged_message
from .functions import register
from .schema import (BAD_INPUT_SCHEMA, COLUMNS, COMMIT_MESSAGE, DATA_TABLES, JSON_COLUMNS, LABEL_SCHEMA, LOG_TABLES,
                     VIEWS, pair_table)

log = logging.getLogger(__name__)
STATS_KEY = b"labelgen.stats"  # metadata of a label file (its vote's counts) and an images file (the chains' counts)
PARTS_KEY = b"labelgen.parts"  # an images file's metadata: how many label files (vote partitions) its category has
MEAN_COLUMNS = ("cycle_error", "similarity", "support")  # run_stats has their means per category
STAT_COLUMNS = ["category", "src_image_id", "tgt_image_id", "hops", *MEAN_COLUMNS]  # what a label file is read for
SUMS = ", ".join(f"sum({c}) AS sum_{c}, count({c}) AS n_{c}" for c in MEAN_COLUMNS)
RETRACTED = "retracted.parquet"  # a run's pairs file (per category) of pairs it supersedes without examining them
INLINE_ROWS = 1000  # inserts of up to this many rows live in the catalog, not in a Parquet file each


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def code_version() -> str:
    """The package version, and the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=os.path.dirname(__file__),
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def sum_counts(counts) -> dict:
    """Key by key sums of count dicts (a category's chunks and partitions, a run's categories)."""
    out = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _category(uri: str) -> str:
    """The category of a run's label file (.../category=<c>/part-<p>.parquet)."""
    return posixpath.basename(posixpath.dirname(uri))[len("category="):]


def _record(row: dict) -> dict:
    """A catalog row as the pipeline's record: JSON parsed, times as ISO strings."""
    out = {}
    for k, v in row.items():
        if k in JSON_COLUMNS and isinstance(v, str):
            v = json.loads(v)
        elif isinstance(v, datetime):
            v = v.replace(tzinfo=timezone.utc).isoformat(timespec="milliseconds")
        out[k] = v
    return out


def _row(table: str, record: dict) -> list:
    """Values in the column order of a log table; JSON columns serialised; unknown keys refused."""
    unknown = set(record) - set(COLUMNS[table]) - ({"status"} if table == "model_log" else set())  # status: derived
    if unknown:
        raise ValueError(f"{table} has no columns {sorted(unknown)}; columns: {COLUMNS[table]}")
    return [_json(record.get(c)) if c in JSON_COLUMNS and record.get(c) is not None else record.get(c)
            for c in COLUMNS[table]]


def _json(value) -> str:
    """Standard JSON, NaN and infinities as null: a PostgreSQL catalog's JSON type refuses them
    (a model trained without held-out pairs has NaN scores)."""
    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(value), allow_nan=False)


class LabelStore:
    def __init__(self, uri: str, catalog: str | None = None):
        uri = str(uri)
        self.uri = uri.rstrip("/") if is_remote(uri) else os.path.abspath(os.path.expanduser(uri))
        self.catalog = catalog or None

    def __str__(self):
        return self.uri

    # connections: short-lived, so that no transaction or lock outlives the call that needs it
    @contextmanager
    def _writer(self):
        con = cat.attach(self.uri, self.catalog, create=True)
        try:
            self._create_tables(con)
            cat.mark_created(self.uri, self.catalog)
            yield con
        finally:
            con.close()

    def _create_tables(self, con):
        have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()}
        if {*DATA_TABLES, *LOG_TABLES} <= have:
            return

        if "labels" in have:
            self._upgrade(con, have)  # a store of the layout before current labels, in place, once

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

        cat.retrying(f"create store {self}", create)

    def _upgrade(self, con, have: set[str]):
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
                    pairs = pairs.join(rows.select(["src_image_id", "tgt_image_id", "category"]).group_by(
                        ["src_image_id", "tgt_image_id", "category"]).aggregate([]), ["src_image_id", "tgt_image_id"])
                    for name, table in (("label_history", rows.cast(LABEL_SCHEMA)),
                                        ("label_pairs", pairs.select(DATA_TABLES["label_pairs"].names).cast(DATA_TABLES["label_pairs"]))):
                        uri = self._run(run_id, name, "upgrade.parquet")
                        write_bytes(uri, table_bytes(table))
                        con.execute(f"CALL ducklake_add_data_files('lake', '{name}', ?)", [uri])
                con.execute("DROP TABLE lake.labels")

        def add_column():
            with cat.transaction(con):
                con.execute("ALTER TABLE lake.run_log ADD COLUMN IF NOT EXISTS label_hash VARCHAR")

        cat.retrying(f"upgrade store {self}", add_column)
        cat.retrying(f"upgrade store {self}", upgrade)
        have.update({"label_history", "label_pairs"})
        log.warning("store %s: upgraded to current labels (label_history, label_pairs, the view labels)", self)

    def session(self, what: str, fn, read_only: bool = True):
        """fn(con) on a fresh connection to the store, again after a lock conflict."""
        def attempt():
            con = cat.attach(self.uri, self.catalog, read_only=read_only)
            try:
                return fn(con)
            finally:
                con.close()

        return cat.retrying(f"{what} {self}", attempt)

    def _rows(self, sql: str, params=()) -> list[dict]:
        """Rows of a query on the latest snapshot; none when the store does not exist yet."""
        def rows(con):
            cur = con.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [_record(dict(zip(names, r))) for r in cur.fetchall()]

        try:
            return self.session("read", rows)
        except FileNotFoundError:
            return []

    def _append(self, table: str, record: dict):
        def insert():
            with self._writer() as con:
                con.execute(f"INSERT INTO lake.{table} VALUES ({', '.join('?' * len(COLUMNS[table]))})", _row(table, record))

        cat.retrying(f"append to {table} of {self}", insert)

    # paths of the files a run's tasks write
    def _run(self, run_id: str, *parts: str) -> str:
        return join(self.uri, "runs", run_id, *parts)

    def part_uri(self, run_id: str, category: str, part: int = 0, kind: str = "labels") -> str:
        """A vote partition's file of `kind`: labels, or pairs (the image pairs it examined)."""
        return self._run(run_id, kind, f"category={category}", f"part-{part:05d}.parquet")

    def images_uri(self, run_id: str, category: str) -> str:
        return self._run(run_id, "images", f"category={category}.parquet")

    def candidates_uri(self, run_id: str, category: str, part: int, chunk: int) -> str:
        return self._run(run_id, "candidates", f"category={category}", f"part-{part:05d}", f"chunk-{chunk:05d}.parquet")

    def write_candidates(self, run_id: str, category: str, part: int, chunk: int, table: pa.Table):
        write_bytes(self.candidates_uri(run_id, category, part, chunk), table_bytes(table))

    def candidates(self, run_id: str, category: str, part: int) -> pa.Table:
        """The candidate labels every chunk of a category wrote for one vote partition."""
        files = self._staged(run_id, "candidates", f"category={category}", f"part-{part:05d}")
        tables = [pq.read_table(pa.BufferReader(read_bytes(f))) for f in files]
        return pa.concat_tables(tables) if tables else LABEL_SCHEMA.empty_table()

    def _staged(self, run_id: str, *kind: str) -> list[str]:
        """URIs of the files of one kind (labels, images, candidates/...) that the run's tasks wrote."""
        fs, root = filesystem(self.uri)
        paths = [p for p in list_files(self._run(run_id, *kind)) if p.endswith(".parquet")]
        return [join(self.uri, posixpath.relpath(p, root)) for p in paths]

    # runs: a row per state (incomplete, failed, committed) in run_log; `runs` shows the latest
    def run_record(self, run_id: str) -> dict | None:
        rows = self._rows("FROM lake.run_log WHERE run_id = ? ORDER BY logged DESC LIMIT 1", [run_id])
        return rows[0] if rows else None

    def begin_run(self, record: dict) -> dict:
        """Log the run as started, or return the record a previous attempt logged (resume)."""
        previous = self.run_record(record["run_id"])
        if previous is not None:
            return previous
        record = {**record, "status": "incomplete", "started": now(), "code_version": code_version(),
                  # the features its labels are made on: the backbone's unless the run says (labels.features)
                  "label_features": record.get("label_features") or record.get("backbone_fingerprint")}
        self._append("run_log", {**record, "logged": now()})
        return record

    def update_run(self, run_id: str, **fields):
        record = self.run_record(run_id) or {"run_id": run_id}
        self._append("run_log", {**record, **fields, "logged": now()})

    def fail_run(self, run_id: str, error: str):
        self.update_run(run_id, status="failed", error=error, finished=now())

    def is_committed(self, run_id: str) -> bool:
        return (self.run_record(run_id) or {}).get("status") == "committed"

    def staged_categories(self, run_id: str) -> set[str]:
        """Categories a previous attempt of this run finished: its images file and every label
        file (vote partition) it names."""
        written = {}
        for uri in self._staged(run_id, "labels"):
            category = _category(uri)
            written[category] = written.get(category, 0) + 1
        return {c for c, (_, parts) in self._images_meta(run_id).items() if written.get(c) == parts}

    def labelled_images(self, label_features: str, label_hash: str, before: str) -> set[str]:
        """Images that took part in a tuple of a run with these label features and label config
        (runs.label_hash) committed before `before` (a run's start: every attempt of it sees the
        same): a run with the same ones has nothing new to do for them."""
        return {i for (i,) in self.session("labelled images of", lambda con: con.execute(
            "SELECT DISTINCT i.image_id FROM lake.images i JOIN lake.runs r USING (run_id) WHERE r.status = 'committed' "
            "AND r.label_features = ? AND r.label_hash = ? AND r.finished < ?::TIMESTAMP AND i.n_fg IS NOT NULL",
            [label_features, label_hash, before]).fetchall())}

    def source_images(self) -> set[str]:
        """Images that are the source of at least one current label (from the pairs: no label is read)."""
        return {i for (i,) in self.session("sources of", lambda con: con.execute(
            "SELECT DISTINCT src_image_id FROM lake.current_pairs WHERE labels > 0").fetchall())}

    def staged_sources(self, run_id: str) -> set[str]:
        """Source images of the labels the run's tasks wrote (from its pair files)."""
        out = set()
        for f in self._staged(run_id, "pairs"):
            pairs = pq.read_table(pa.BufferReader(read_bytes(f)), columns=["src_image_id", "labels"])
            out.update(pairs.filter(pc.greater(pairs["labels"], 0))["src_image_id"].unique().to_pylist())
        return out

    def replaced_images(self, run_id: str, found) -> set[str]:
        """`found` (images whose file changed since their features were cached) and those an
        earlier attempt of the run found, which it cached anew: every attempt labels the same."""
        uri, found = self._run(run_id, "replaced.parquet"), set(found)
        known = set(pq.read_table(pa.BufferReader(read_bytes(uri)))["image_id"].to_pylist()) if exists(uri) else set()
        if not found <= known:
            write_bytes(uri, table_bytes(pa.table({"image_id": sorted(known | found)})))
        return known | found

    def write_retractions(self, run_id: str, images: set[str], before: str) -> int:
        """Supersede the current labels made on the old features of replaced `images`: each
        current pair with one of them, of a run committed before `before` (this run's start),
        that this run did not examine again, as a pair of this run with 0 labels."""
        replaced = pa.table({"image_id": pa.array(sorted(images), pa.string())})

        def current(con):
            con.register("replaced", replaced)
            return con.execute(
                "SELECT c.category, c.src_image_id, c.tgt_image_id FROM lake.current_pairs c JOIN lake.runs r USING (run_id) "
                "WHERE c.labels > 0 AND r.finished < ?::TIMESTAMP AND (c.src_image_id IN (FROM replaced) "
                "OR c.tgt_image_id IN (FROM replaced))", [before]).fetch_arrow_table()

        stale, keys = self.session("labels of replaced images in", current), ["category", "src_image_id", "tgt_image_id"]
        examined = [pq.read_table(pa.BufferReader(read_bytes(f)), columns=keys) for f in self._staged(run_id, "pairs")
                    if not f.endswith(RETRACTED)]
        if examined:
            stale = stale.join(pa.concat_tables(examined), keys, join_type="left anti")
        for category in pc.unique(stale["category"]).to_pylist():
            rows = stale.filter(pc.equal(stale["category"], category))
            pairs = pair_table(run_id, category, rows, rows.slice(0, 0))
            write_bytes(self._run(run_id, "pairs", f"category={category}", RETRACTED), table_bytes(pairs))
        return stale.num_rows

    def write_part(self, run_id: str, category: str, part: int, labels: pa.Table, stats: dict,
                   examined: pa.Table | None = None):
        """One vote partition's labels, with its counts in the file's metadata, and the image
        pairs it examined (those with candidates in `examined`, default: in `labels`), first:
        the label file marks the partition done. Called from Ray tasks: files only, no catalog."""
        pairs = pair_table(run_id, category, labels if examined is None else examined, labels)
        write_bytes(self.part_uri(run_id, category, part, "pairs"), table_bytes(pairs))
        labels = labels.cast(LABEL_SCHEMA).replace_schema_metadata({STATS_KEY: json.dumps(stats).encode()})
        write_bytes(self.part_uri(run_id, category, part), table_bytes(labels))

    def write_images(self, run_id: str, category: str, images: pa.Table, stats: dict, parts: int):
        """The category's images, with the chains' counts and its number of vote partitions."""
        images = images.replace_schema_metadata({STATS_KEY: json.dumps(stats).encode(), PARTS_KEY: str(parts).encode()})
        write_bytes(self.images_uri(run_id, category), table_bytes(images))

    def write_category(self, run_id: str, category: str, labels: pa.Table, images: pa.Table, stats: dict):
        """A category's labels in one partition (a copied run, tests)."""
        self.write_part(run_id, category, 0, labels, {})
        self.write_images(run_id, category, images, stats, parts=1)

    def _images_meta(self, run_id: str) -> dict[str, tuple[dict, int]]:
        """category -> (the chains' counts, vote partitions) of the run's images files."""
        out = {}
        for uri in self._staged(run_id, "images"):
            meta = pq.read_schema(pa.BufferReader(read_bytes(uri))).metadata or {}
            out[posixpath.basename(uri)[len("category="):-len(".parquet")]] = (
                json.loads(meta.get(STATS_KEY, b"{}")), int(meta.get(PARTS_KEY, b"1")))
        return out

    def category_stats(self, run_id: str, label_meta: dict[str, dict] | None = None) -> dict[str, dict]:
        """Per-category counts of the categories staged so far: the chains' and the sum of its
        vote partitions' (`label_meta`: label file -> its metadata, when already read)."""
        if label_meta is None:
            label_meta = {uri: pq.read_schema(pa.BufferReader(read_bytes(uri))).metadata or {}
                          for uri in self._staged(run_id, "labels")}
        parts = {}
        for uri, meta in label_meta.items():
            parts.setdefault(_category(uri), []).append(json.loads(meta.get(STATS_KEY, b"{}")))
        chains = {c: stats for c, (stats, _) in self._images_meta(run_id).items()}
        return {c: sum_counts([chains.get(c, {}), *parts.get(c, [])]) for c in chains.keys() | parts.keys()}

    def _label_stats(self, run_id: str, files: list[str]) -> pa.Table:
        """run_stats rows of the run's staged label files, computed before the commit so that its
        transaction stays short. Each file is read once (rows, and the vote's counts in its
        metadata) and reduced to per-category sums at once, so the driver holds one file at a
        time however large the run; an image pair lies in one vote partition, one file, so
        its distinct pairs add up across files."""
        con, sums, meta = duckdb.connect(), [], {}
        try:
            for f in files or [None]:
                table = (LABEL_SCHEMA.empty_table() if f is None else
                         pq.read_table(pa.BufferReader(read_bytes(f)), columns=STAT_COLUMNS))
                meta[f] = table.schema.metadata or {}
                con.register("staged", table)
                sums.append(con.execute(f"SELECT category, count(*) AS labels, count(DISTINCT (src_image_id, tgt_image_id)) "
                                        f"AS image_pairs, max(hops) AS max_hops, {SUMS} FROM staged GROUP BY category"
                                        ).fetch_arrow_table())
                con.unregister("staged")
            con.register("sums", pa.concat_tables(sums))
            means = ", ".join(f"sum(sum_{c}) / sum(n_{c}) AS mean_{c}" for c in MEAN_COLUMNS)
            out = con.execute(f"""
                SELECT ? AS run_id, category, sum(labels)::BIGINT AS labels, sum(image_pairs)::BIGINT AS image_pairs,
                       {means}, max(max_hops)::INTEGER AS max_hops
                FROM sums GROUP BY category ORDER BY category""", [run_id]).fetch_arrow_table()
        finally:
            con.close()
        stats = self.category_stats(run_id, {f: m for f, m in meta.items() if f is not None})
        counts = [json.dumps(stats.get(c, {})) for c in out["category"].to_pylist()]
        return out.append_column("counts", pa.array(counts, pa.string()))

    def commit(self, run_id: str, counts: dict, bad_inputs: list[dict]) -> dict:
        """Make the run visible in one transaction (one snapshot): register its label and image
        files, insert its bad inputs, per-category stats and committed state. A lock conflict
        retries the whole transaction, unless the failed try did commit."""
        label_files, image_files, pair_files = (self._staged(run_id, kind) for kind in ("labels", "images", "pairs"))
        stats = self._label_stats(run_id, label_files)
        bad = pa.Table.from_pylist([{**b, "run_id": run_id} for b in bad_inputs], schema=BAD_INPUT_SCHEMA)
        record = {**(self.run_record(run_id) or {"run_id": run_id}), "status": "committed", "finished": now(),
                  "counts": counts, "error": None}

        def attempt():
            with self._writer() as con, cat.transaction(con):
                con.execute("CALL lake.set_commit_message('labelgen', ?, extra_info => ?)", [COMMIT_MESSAGE, run_id])
                for table, files in (("label_history", label_files), ("label_pairs", pair_files), ("images", image_files)):
                    for f in files:
                        con.execute(f"CALL ducklake_add_data_files('lake', '{table}', ?)", [f])
                for table, rows in (("bad_inputs", bad), ("run_stats", stats)):
                    if len(rows):
                        con.register("new_rows", rows)
                        con.execute(f"INSERT INTO lake.{table} BY NAME SELECT * FROM new_rows")
                        con.unregister("new_rows")
                con.execute(f"INSERT INTO lake.run_log VALUES ({', '.join('?' * len(COLUMNS['run_log']))})",
                            _row("run_log", {**record, "logged": now()}))

        cat.retrying(f"commit run {run_id}", attempt, committed=lambda: self.is_committed(run_id))
        self.drop_candidates(run_id)
        return record

    def drop_candidates(self, run_id: str):
        """Delete a committed run's staged candidates: the vote's inputs, not part of the run
        (a kill between the commit and this leaves them for the next start to drop)."""
        delete_dir(self._run(run_id, "candidates"))

    # models: a row per state (trained, decided) in model_log; `models` shows the latest
    def model_uri(self, model_id: str, name: str) -> str:
        return join(self.uri, "models", model_id, name)

    def save_model(self, record: dict, weights: bytes | None = None) -> dict:
        if weights is not None:
            write_bytes(self.model_uri(record["model_id"], "adapter.pt"), weights)
            record = {**record, "checkpoint": self.model_uri(record["model_id"], "adapter.pt")}
        self._append("model_log", {**record, "logged": now()})
        return record

    def models(self) -> list[dict]:
        """Model records, oldest first; `status`: the latest promotion is 'promoted', earlier
        ones 'retired', others 'rejected' or (undecided) 'training'."""
        return self._rows("FROM lake.models ORDER BY created")

    def promoted_model(self) -> dict | None:
        return next((r for r in self.models() if r["status"] == "promoted"), None)

    def save_sphere(self, record: dict, weights: bytes) -> dict:
        """A trained spherical mapper: weights, then its row (the row makes it visible)."""
        uri = join(self.uri, "spheres", record["sphere_id"], "mapper.pt")
        write_bytes(uri, weights)
        record = {**record, "checkpoint": uri}
        self._append("spheres", record)
        return record

    def spheres(self) -> list[dict]:
        """Spherical mapper records, oldest first."""
        return self._rows("FROM lake.spheres ORDER BY created")

    # snapshots
    def current_snapshot(self) -> int:
        return self.session("snapshot of", lambda con: con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0])

    def data_files(self, table: str, snapshot: int) -> list[str]:
        """The Parquet URIs that hold `table` at `snapshot`, for readers that must not open the
        catalog (Ray tasks and Train workers). label_history, label_pairs and images only:
        their rows are always registered files, never inlined, never deleted. After compaction a file may also hold
        rows of later runs: readers filter by run_id (runs committed at `snapshot`)."""
        rows = self.session("files of", lambda con: con.execute(
            f"SELECT data_file, delete_file FROM ducklake_list_files('lake', '{table}', snapshot_version => {int(snapshot)})"
        ).fetchall())
        if any(d for _, d in rows):
            raise RuntimeError(f"table {table} of {self} has deleted rows at snapshot {snapshot}; read it through the catalog")
        return [f for f, _ in rows]

    def connect(self, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
        """A read-only DuckDB connection at the latest snapshot (or `snapshot`): the tables and
        views of the store, and the functions true_xy and part_truth. It cannot write, nor
        read any file outside the store and its catalog."""
        con = cat.retrying(f"open {self}", lambda: cat.attach(self.uri, self.catalog, read_only=True, snapshot=snapshot))
        if damaged := damaged_files(con, snapshot):
            con.close()
            raise RuntimeError(damaged_message(self, damaged))
        allowed = [join(self.uri, "")]
        sqlite = cat.sqlite_file(self.uri, cat.resolve_catalog(self.uri, self.catalog, create=False))
        if sqlite:
            allowed.append(os.path.dirname(sqlite) + "/")
        register(con)
        con.execute("SET enable_progress_bar = false")
        con.execute("SET allowed_directories = ?", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con
