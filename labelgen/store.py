"""The label store: immutable Parquet files plus one small JSON record per run and commit.

Layout under the store URI (a local folder or s3://bucket/prefix):

    runs/<run>/run.json                              written when the run starts
    runs/<run>/labels/category=<c>/part-00000.parquet   staged labels of a category
    runs/<run>/images/category=<c>.parquet             the category's images, n_fg
    runs/<run>/bad_inputs.parquet                      images the run skipped, and why
    commits/<run>.json                                 the commit: its files and counts
    features/<backbone fingerprint>/...                the feature cache

Why this shape: S3 has no rename and no lock, and workers share no disk. A run's
files are invisible until its commit record appears, and that record is one
PUT (or one rename locally), so a reader sees all of a run or none of it, and a
killed run leaves nothing visible. Shard names are deterministic, so a retried
or resumed task overwrites its own file instead of adding rows. The DuckDB
catalog is derived from the records on every `connect()` (a throw-away local
file, opened read-only), so it never goes stale and needs no shared disk.
"""

import io as _io
import json
import os
import posixpath
import subprocess
import tempfile
from datetime import datetime, timezone

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from . import __version__
from .geometry import transfer
from .io import exists, filesystem, is_remote, join, list_dirs, list_files, read_bytes, write_bytes
from .labels import LABEL_SCHEMA
from .truth import judge, load_truth

RUN_COLUMNS = [
    "run_id", "status", "started", "finished", "manifest", "backbone", "backbone_fingerprint", "label_features",
    "config", "config_hash", "code_version", "counts", "error",
]
# times are UTC
RUNS_DDL = """run_id VARCHAR, status VARCHAR, started TIMESTAMP, finished TIMESTAMP, manifest VARCHAR,
    backbone VARCHAR, backbone_fingerprint VARCHAR, label_features VARCHAR, config VARCHAR, config_hash VARCHAR, code_version VARCHAR,
    counts JSON, error VARCHAR"""
MODELS_DDL = """model_id VARCHAR, status VARCHAR, parent VARCHAR, label_runs JSON, backbone_fingerprint VARCHAR,
    metrics JSON, checkpoint VARCHAR, config VARCHAR, created TIMESTAMP, decided TIMESTAMP, reason VARCHAR"""
MODEL_COLUMNS = [c.split()[0] for c in MODELS_DDL.split(",")]
SPHERES_DDL = """sphere_id VARCHAR, label_run VARCHAR, backbone_fingerprint VARCHAR, images INTEGER, train_s DOUBLE,
    checkpoint VARCHAR, created TIMESTAMP"""
SPHERE_COLUMNS = [c.split()[0] for c in SPHERES_DDL.split(",")]
BAD_INPUT_SCHEMA = pa.schema(
    [("run_id", pa.string()), ("image_id", pa.string()), ("uri", pa.string()), ("stage", pa.string()), ("error", pa.string())]
)
IMAGE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("image_id", pa.string()),
        ("category", pa.string()),
        ("uri", pa.string()),
        ("mask_uri", pa.string()),
        ("azimuth", pa.float64()),
        ("elevation", pa.float64()),
        ("split", pa.string()),
        ("width", pa.int32()),  # original pixels; null when the image took part in no tuple
        ("height", pa.int32()),
        ("n_fg", pa.int32()),  # foreground patches; null when the image took part in no tuple
        ("homography", pa.list_(pa.float64())),  # photo -> view, where truth is known (the demo)
        ("truth_uri", pa.string()),  # part truth of a rendered view (labelgen.truth), where known
    ]
)
VIEWS = {
    "run_stats": """
        SELECT run_id, category, count(*) AS labels,
               count(DISTINCT (src_image_id, tgt_image_id)) AS image_pairs,
               avg(cycle_error) AS mean_cycle_error, avg(similarity) AS mean_similarity,
               avg(support) AS mean_support, max(hops) AS max_hops
        FROM labels GROUP BY run_id, category""",
}


def images_table(frame: pd.DataFrame) -> pa.Table:
    """Image rows in IMAGE_SCHEMA; columns the manifest lacks (e.g. homography) are null."""
    cols = {n: frame[n] if n in frame.columns else [None] * len(frame) for n in IMAGE_SCHEMA.names}
    return pa.table({n: pa.array(list(v), type=IMAGE_SCHEMA.field(n).type, from_pandas=True) for n, v in cols.items()})


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


def put_json(uri: str, record) -> None:
    write_bytes(uri, json.dumps(record, indent=1).encode())


def table_bytes(table: pa.Table) -> bytes:
    buf = _io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _true_xy(hom_src: pa.Array, hom_tgt: pa.Array, x: pa.Array, y: pa.Array) -> pa.Array:
    """SQL `true_xy(src homography, tgt homography, x, y)`: where a source pixel truly lands."""
    if len(x) == 0:
        return pa.array([], type=pa.list_(pa.float64()))
    hs = np.stack(hom_src.to_numpy(zero_copy_only=False)).reshape(-1, 3, 3)
    ht = np.stack(hom_tgt.to_numpy(zero_copy_only=False)).reshape(-1, 3, 3)
    xy = transfer(hs, ht, np.stack([x.to_numpy(), y.to_numpy()], axis=1))
    return pa.array(list(xy), type=pa.list_(pa.float64()))


PART_VERDICT = pa.struct([("error", pa.float64()), ("hidden", pa.bool_()), ("twin", pa.bool_()), ("mirrored", pa.bool_())])


def _part_truth(src_truth: pa.Array, tgt_truth: pa.Array, sx: pa.Array, sy: pa.Array, tx: pa.Array, ty: pa.Array) -> pa.Array:
    """SQL `part_truth(src truth_uri, tgt truth_uri, [src_x], [src_y], [tgt_x], [tgt_y])`: the
    verdicts of one image pair's labels (lists, aggregated per pair so that each pair's truth
    is read and judged once) against part truth (labelgen.truth.judge): per label the error
    in target box sides (NULL where the source point is not visible in the target), hidden,
    from a twin part, mirrored."""
    sx, sy, tx, ty = (c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in (sx, sy, tx, ty))
    src_xy, tgt_xy = (np.stack([u.flatten().to_numpy(zero_copy_only=False), v.flatten().to_numpy(zero_copy_only=False)], 1)
                      for u, v in ((sx, sy), (tx, ty)))
    offsets = sx.offsets.to_numpy() - sx.offsets[0].as_py()
    out = {"error": np.full(len(src_xy), np.nan), **{k: np.zeros(len(src_xy), bool) for k in ("hidden", "twin_part", "mirrored")}}
    for k, (a, b) in enumerate(zip(src_truth.to_pylist(), tgt_truth.to_pylist())):
        lo, hi = offsets[k], offsets[k + 1]
        verdict = judge(load_truth(a), load_truth(b), src_xy[lo:hi], tgt_xy[lo:hi])
        for key, value in out.items():
            value[lo:hi] = verdict[key]
    error = pa.array(out["error"], mask=np.isnan(out["error"]))
    verdicts = pa.StructArray.from_arrays([error, *(pa.array(out[k]) for k in ("hidden", "twin_part", "mirrored"))],
                                          fields=list(PART_VERDICT))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), verdicts)


class LabelStore:
    def __init__(self, uri: str):
        uri = str(uri)
        self.uri = uri.rstrip("/") if is_remote(uri) else os.path.abspath(os.path.expanduser(uri))

    def __str__(self):
        return self.uri

    def _records(self, *folder: str) -> dict[str, dict]:
        """The JSON records directly in a store folder, by file name without `.json`."""
        base = join(self.uri, *folder)
        return {posixpath.basename(p)[: -len(".json")]: json.loads(read_bytes(join(base, posixpath.basename(p))))
                for p in list_files(base, recursive=False) if p.endswith(".json")}

    # paths
    def _run(self, run_id: str, *parts: str) -> str:
        return join(self.uri, "runs", run_id, *parts)

    def part_uri(self, run_id: str, category: str, part: int = 0) -> str:
        return self._run(run_id, "labels", f"category={category}", f"part-{part:05d}.parquet")

    def images_uri(self, run_id: str, category: str) -> str:
        return self._run(run_id, "images", f"category={category}.parquet")

    def commit_uri(self, run_id: str) -> str:
        return join(self.uri, "commits", f"{run_id}.json")

    # writing a run
    def run_record(self, run_id: str) -> dict | None:
        uri = self._run(run_id, "run.json")
        return json.loads(read_bytes(uri)) if exists(uri) else None

    def begin_run(self, record: dict) -> dict:
        """Write the run record, or return the one a previous attempt wrote (resume)."""
        previous = self.run_record(record["run_id"])
        if previous is not None:
            return previous
        record = {**record, "started": now(), "code_version": code_version()}
        put_json(self._run(record["run_id"], "run.json"), record)
        return record

    def update_run(self, run_id: str, **fields):
        record = self.run_record(run_id) or {"run_id": run_id}
        put_json(self._run(run_id, "run.json"), {**record, **fields})

    def fail_run(self, run_id: str, error: str):
        self.update_run(run_id, error=error, failed=now())

    def is_committed(self, run_id: str) -> bool:
        return exists(self.commit_uri(run_id))

    def staged_categories(self, run_id: str) -> set[str]:
        """Categories whose labels a previous attempt of this run already wrote."""
        names = list_files(self._run(run_id, "labels"))
        return {posixpath.basename(posixpath.dirname(p))[len("category="):] for p in names}

    def write_category(self, run_id: str, category: str, labels: pa.Table, images: pa.Table, stats: dict):
        """Stats and images first, labels last: a category is done once its label file exists."""
        put_json(self._run(run_id, "stats", f"category={category}.json"), stats)
        write_bytes(self.images_uri(run_id, category), table_bytes(images))
        write_bytes(self.part_uri(run_id, category), table_bytes(labels.cast(LABEL_SCHEMA)))

    def category_stats(self, run_id: str) -> dict[str, dict]:
        """Per-category counts of the categories done so far."""
        return {name[len("category="):]: stats for name, stats in self._records("runs", run_id, "stats").items()}

    def commit(self, run_id: str, counts: dict, bad_inputs: list[dict]) -> dict:
        """Make the run visible: one record naming every file of the run."""
        bad = pa.Table.from_pylist([{**b, "run_id": run_id} for b in bad_inputs], schema=BAD_INPUT_SCHEMA)
        write_bytes(self._run(run_id, "bad_inputs.parquet"), table_bytes(bad))
        fs, root = filesystem(self.uri)
        files = [posixpath.relpath(p, root) for p in list_files(self._run(run_id)) if p.endswith(".parquet")]
        record = {"run_id": run_id, "committed": now(), "files": files, "counts": counts}
        put_json(self.commit_uri(run_id), record)
        return record

    # the model registry: one record per model, decisions written into it (one PUT)
    def model_uri(self, model_id: str, *parts: str) -> str:
        return join(self.uri, "models", model_id, *parts) if parts else join(self.uri, "models", f"{model_id}.json")

    def save_model(self, record: dict, weights: bytes | None = None) -> dict:
        if weights is not None:
            write_bytes(self.model_uri(record["model_id"], "adapter.pt"), weights)
            record = {**record, "checkpoint": self.model_uri(record["model_id"], "adapter.pt")}
        put_json(self.model_uri(record["model_id"]), record)
        return record

    def models(self) -> list[dict]:
        """Model records, oldest first; `status` is derived: the latest promotion is
        'promoted', earlier ones 'retired'."""
        records = sorted(self._records("models").values(), key=lambda r: r["created"])
        promoted = [r for r in records if r.get("decision") == "promoted"]
        current = max(promoted, key=lambda r: r["decided"])["model_id"] if promoted else None
        for r in records:
            decision = r.get("decision") or "training"
            r["status"] = "retired" if decision == "promoted" and r["model_id"] != current else decision
        return records

    def save_sphere(self, record: dict, weights: bytes) -> dict:
        """A trained spherical mapper: weights, then its record (the record makes it visible)."""
        uri = join(self.uri, "spheres", record["sphere_id"], "mapper.pt")
        write_bytes(uri, weights)
        record = {**record, "checkpoint": uri}
        put_json(join(self.uri, "spheres", f"{record['sphere_id']}.json"), record)
        return record

    def spheres(self) -> list[dict]:
        """Spherical mapper records, oldest first."""
        return sorted(self._records("spheres").values(), key=lambda r: r["created"])

    def promoted_model(self) -> dict | None:
        return next((r for r in self.models() if r["status"] == "promoted"), None)

    # reading
    def commits(self) -> list[dict]:
        return list(self._records("commits").values())

    def committed_files(self, kind: str, commits: list[dict] | None = None) -> list[str]:
        """Store-relative paths of committed files of one kind: labels, images or bad_inputs."""
        commits = self.commits() if commits is None else commits
        return [f for c in commits for f in c["files"] if f.split("/")[2].startswith(kind)]

    def dataset(self, files: list[str], schema: pa.Schema | None = None) -> pads.Dataset:
        fs, root = filesystem(self.uri)
        return pads.dataset([posixpath.join(root, f) for f in files], filesystem=fs, format="parquet", schema=schema)

    def _models_frame(self) -> pd.DataFrame:
        rows = [{k: json.dumps(r.get(k)) if k in ("label_runs", "metrics") else r.get(k) for k in MODEL_COLUMNS}
                for r in self.models()]
        return pd.DataFrame(rows, columns=MODEL_COLUMNS)

    def _runs_frame(self, commits: list[dict]) -> pd.DataFrame:
        committed = {c["run_id"]: c for c in commits}
        rows = []
        for run_id in list_dirs(join(self.uri, "runs")):
            record = self.run_record(run_id)
            if record is None:  # a folder without its record: nothing usable was written
                continue
            c = committed.get(run_id)
            status = "committed" if c else ("failed" if record.get("error") else "incomplete")
            rows.append({
                **{k: record.get(k) for k in RUN_COLUMNS},
                "status": status,
                "finished": c["committed"] if c else record.get("failed"),
                "counts": json.dumps(c["counts"]) if c else None,
                # the features labels were made on: the backbone's, or an adapter's (labels.features)
                "label_features": record.get("label_features") or record.get("backbone_fingerprint"),
            })
        return pd.DataFrame(rows, columns=RUN_COLUMNS)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only DuckDB connection: tables runs, images, bad_inputs, models, spheres; views labels
        (committed runs only) and run_stats; the functions true_xy and part_truth. It cannot read or
        write any other file."""
        if not exists(join(self.uri, "runs")):
            raise FileNotFoundError(f"no label store at {self.uri} (no runs/); run `python -m labelgen.run` first")
        commits = self.commits()
        fd, path = tempfile.mkstemp(suffix=".duckdb", prefix="labelgen-catalog-")
        os.close(fd)
        os.unlink(path)
        try:
            con = duckdb.connect(path)
            runs = self._runs_frame(commits)
            spheres = pd.DataFrame([{k: r.get(k) for k in SPHERE_COLUMNS} for r in self.spheres()], columns=SPHERE_COLUMNS)
            for name, ddl, frame in (("runs", RUNS_DDL, runs), ("models", MODELS_DDL, self._models_frame()),
                                     ("spheres", SPHERES_DDL, spheres)):
                con.execute(f"CREATE TABLE {name} ({ddl})")
                if len(frame):
                    con.register("frame", frame)
                    con.execute(f"INSERT INTO {name} SELECT * FROM frame")
                    con.unregister("frame")
            for name, schema in (("images", IMAGE_SCHEMA), ("bad_inputs", BAD_INPUT_SCHEMA)):
                files = self.committed_files(name, commits)
                data = self.dataset(files, schema).to_table() if files else schema.empty_table()
                con.register("data", data)
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM data")
                con.unregister("data")
            con.close()
            con = duckdb.connect(path, read_only=True)
        finally:
            if os.path.exists(path):
                os.unlink(path)  # the open connection keeps it; nothing is left behind
        con.register("labels_data", self.dataset(self.committed_files("labels", commits), LABEL_SCHEMA))
        con.execute("CREATE TEMP VIEW labels AS SELECT * FROM labels_data")
        for name, sql in VIEWS.items():
            con.execute(f"CREATE TEMP VIEW {name} AS {sql}")
        con.create_function("true_xy", _true_xy, ["DOUBLE[]", "DOUBLE[]", "DOUBLE", "DOUBLE"], "DOUBLE[]", type="arrow")
        con.create_function("part_truth", _part_truth, ["VARCHAR", "VARCHAR"] + ["DOUBLE[]"] * 4,
                            "STRUCT(error DOUBLE, hidden BOOLEAN, twin BOOLEAN, mirrored BOOLEAN)[]", type="arrow")
        con.execute("SET enable_progress_bar = false")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con
