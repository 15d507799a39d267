"""Copy a label store of an older labelgen (JSON records: `runs/<run>/run.json`,
`commits/<run>.json`, `models/<id>.json`, `spheres/<id>.json`) into a new DuckLake store.

Why through LabelStore's own calls: a migrated run is then exactly what a run of this
labelgen would have left, one commit snapshot each, in the old commit order, with its
label and image files written under the new store and their per-category counts in
the label files' metadata. Only what the old store showed is copied: committed runs
with their files; failed and incomplete runs as records only (no labels, as before);
models and mappers with their weights. The feature cache is not copied (it is large,
and recomputed or pointed at with features.cache=); the old store is only read.
"""

import json
import os
import posixpath
import time

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MissingInput, UsageError
from ..io import exists, is_remote, join, list_dirs, list_files, read_bytes
from .catalog import MARKER
from .connections import now
from .lake import LabelStore
from .schema import BAD_INPUT_SCHEMA, COLUMNS, IMAGE_SCHEMA, LABEL_SCHEMA


def _uri(uri: str) -> str:
    return uri.rstrip("/") if is_remote(uri) else os.path.abspath(os.path.expanduser(uri))


def _json(uri: str):
    return json.loads(read_bytes(uri))


def _records(uri: str) -> list[dict]:
    """The JSON records directly in a folder of the old store."""
    return [_json(join(uri, posixpath.basename(p))) for p in list_files(uri, recursive=False) if p.endswith(".json")]


def _table(uris: list[str], schema: pa.Schema) -> pa.Table:
    """Parquet files in `schema`: columns an older labelgen did not write are null."""
    tables = [pq.read_table(pa.BufferReader(read_bytes(u))) for u in uris]
    table = pa.concat_tables(tables, promote_options="permissive") if tables else schema.empty_table()
    return pa.table(
        {
            f.name: table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in schema
        },
        schema=schema,
    )


def _pick(record: dict, table: str) -> dict:
    return {k: v for k, v in record.items() if k in COLUMNS[table]}


def _old_runs(old: str) -> list[tuple[dict, dict | None]]:
    """(run record, commit record or None) of every run of the old store: committed ones in
    commit order, after the others in the order they started."""
    commits = {c["run_id"]: c for c in _records(join(old, "commits"))}
    runs = {}
    for run_id in list_dirs(join(old, "runs")):
        uri = join(old, "runs", run_id, "run.json")
        if exists(uri):
            runs[run_id] = _json(uri)
    for run_id in commits:
        runs.setdefault(run_id, {"run_id": run_id})  # labels committed, record lost: the old store showed its labels
    others = sorted((r for r in runs.values() if r["run_id"] not in commits), key=lambda r: r.get("started") or "")
    done = sorted((r for r in runs.values() if r["run_id"] in commits), key=lambda r: commits[r["run_id"]]["committed"])
    return [(r, None) for r in others] + [(r, commits[r["run_id"]]) for r in done]


def _by_category(files: list[str], kind: str) -> dict[str, list[str]]:
    """A commit record's files of one kind (labels, images) by category."""
    out = {}
    for f in files:
        parts = f.split("/")  # runs/<run>/<kind>/category=<c>[.parquet|/part-N.parquet]
        if len(parts) > 3 and parts[2] == kind:
            category = parts[3][len("category=") :].removesuffix(".parquet")
            out.setdefault(category, []).append(f)
    return out


def _copy_run(old: str, new: LabelStore, record: dict, commit: dict) -> int:
    """Write a committed run's categories and commit it; its number of labels."""
    run_id, files = record["run_id"], commit["files"]
    labels, images = _by_category(files, "labels"), _by_category(files, "images")
    n = 0
    for category in sorted(set(labels) | set(images)):
        label_table = _table([join(old, f) for f in labels.get(category, [])], LABEL_SCHEMA)
        image_table = _table([join(old, f) for f in images.get(category, [])], IMAGE_SCHEMA)
        stats_uri = join(old, "runs", run_id, "stats", f"category={category}.json")
        new.files(run_id).write_category(
            category, label_table, image_table, _json(stats_uri) if exists(stats_uri) else {}
        )
        n += len(label_table)
    bad_files = [join(old, f) for f in files if f.split("/")[2:] == ["bad_inputs.parquet"]]
    bad = [{k: v for k, v in b.items() if k != "run_id"} for b in _table(bad_files, BAD_INPUT_SCHEMA).to_pylist()]
    new.commit(run_id, commit.get("counts") or {}, bad)
    return n


def migrate(old_uri: str, new_uri: str, catalog: str | None = None, log=print) -> dict:
    """Copy the old store at `old_uri` into a new store at `new_uri` (which must not exist
    yet); returns counts of what was copied."""
    t0 = time.perf_counter()
    old, new = _uri(old_uri), LabelStore(new_uri, catalog)
    if exists(join(old, MARKER)):
        raise UsageError(f"{old} already is a store of this labelgen ({MARKER}): nothing to migrate")
    if not (exists(join(old, "commits")) or exists(join(old, "runs"))):
        raise MissingInput(f"no label store of an older labelgen at {old} (no commits/ or runs/)")
    if new.uri == old:
        raise UsageError(f"migrate into a new folder, not into the old store {old} itself")
    if exists(join(new.uri, MARKER)):
        raise UsageError(
            f"cannot migrate {old} into {new.uri}: {new.uri} already holds a store ({MARKER}); "
            "give a new folder, or remove that store (and its catalog) to start again"
        )
    runs = _old_runs(old)
    summary = {"runs": 0, "committed": 0, "failed": 0, "incomplete": 0, "labels": 0, "models": 0, "spheres": 0}
    log(f"migrating {old} -> {new.uri}: {len(runs)} runs")
    with new.writer():  # the store exists (and refuses a second migration) even with nothing to copy
        pass
    for k, (record, commit) in enumerate(runs, 1):
        status = "committed" if commit else "failed" if record.get("error") else "incomplete"
        row = {
            **_pick(record, "run_log"),
            "status": "incomplete" if commit else status,
            "finished": None if commit else record.get("failed"),
            "label_features": record.get("label_features") or record.get("backbone_fingerprint"),
            "logged": now(),
        }
        new.append("run_log", row)  # begin_run would stamp it with today's start and code version
        n = _copy_run(old, new, record, commit) if commit else 0
        summary["runs"] += 1
        summary[status] += 1
        summary["labels"] += n
        log(f"[{k}/{len(runs)}] run {record['run_id']}: {status}" + (f", {n:,} labels" if commit else ", record only"))
    for m in sorted(_records(join(old, "models")), key=lambda r: r.get("created") or ""):
        weights = join(old, "models", m["model_id"], "adapter.pt")
        new.save_model(_pick(m, "model_log"), read_bytes(weights) if exists(weights) else None)
        summary["models"] += 1
    for s in sorted(_records(join(old, "spheres")), key=lambda r: r.get("created") or ""):
        new.save_sphere(_pick(s, "spheres"), read_bytes(join(old, "spheres", s["sphere_id"], "mapper.pt")))
        summary["spheres"] += 1
    log(f"models: {summary['models']}, spherical mappers: {summary['spheres']}")
    if exists(join(old, "features")):
        log(
            f"the feature cache {join(old, 'features')} is not copied: runs, training and evaluation on this store "
            f"recompute features into {join(new.uri, 'features')} unless given features.cache={join(old, 'features')} "
            "(or the folder is moved there)"
        )
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary
