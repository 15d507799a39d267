"""`python -m labelgen.store`: migrating an older labelgen's store, and maintenance."""

import json
import re
import subprocess
import sys

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelgen.store import LABEL_SCHEMA, LabelStore, images_table
from labelgen.store.__main__ import main
from labelgen.store.maintain import maintain
from labelgen.store.migrate import migrate
from tests.support.tiny import begin_run

OLD_LABEL_COLUMNS = LABEL_SCHEMA.names[:13]  # an older labelgen wrote no pair_error, pose_gap, confidence


def labels(run_id, n, category, old=False):
    rows = [
        dict(
            run_id=run_id,
            category=category,
            src_image_id="a",
            tgt_image_id=f"b{i % 3}",
            src_x=float(i),
            src_y=0.5,
            tgt_x=1.0,
            tgt_y=2.0 + i,
            hops=1 + i % 2,
            cycle_error=0.25,
            similarity=0.9,
            sphere_angle=None,
            support=1 + i,
            pair_error=0.5,
            pose_gap=30.0,
            confidence=0.75,
        )
        for i in range(n)
    ]
    table = pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)
    return table.select(OLD_LABEL_COLUMNS) if old else table


def images(run_id, category):
    return images_table(
        pd.DataFrame(
            {
                "run_id": run_id,
                "image_id": ["a", "b0", "b1", "b2"],
                "category": category,
                "uri": ["a.png", "b0.png", "b1.png", "b2.png"],
                "azimuth": [0.0, 30.0, 60.0, 90.0],
                "n_fg": [10, 12, 14, 16],
            }
        )
    )


def put(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, pa.Table):
        pq.write_table(data, path)
    else:
        path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())


RUN = {
    "manifest": "m.parquet",
    "backbone": "mobilenetv2",
    "backbone_fingerprint": "fp",
    "config": "k: 1",
    "code_version": "0.9+abc",
}


def old_store(root):
    """A store as labelgen wrote it before the catalog: two committed runs of two categories
    each (the first from before label_features and the last label columns), a failed run
    with a staged category, a promoted and a rejected model, a spherical mapper."""
    sizes = {"r1": {"cat": 5, "dog": 3}, "r2": {"cat": 4, "fox": 7}}
    for k, (run_id, cats) in enumerate(sizes.items()):
        put(
            root / "runs" / run_id / "run.json",
            {
                **RUN,
                "run_id": run_id,
                "config_hash": f"h{k}",
                "started": f"2025-01-0{k + 1}T10:00:00.000+00:00",
                **({"label_features": "fp+adapter-m1"} if k else {}),
            },
        )
        files = []
        for c, n in cats.items():
            label_file = f"runs/{run_id}/labels/category={c}/part-00000.parquet"
            put(root / label_file, labels(run_id, n, c, old=not k))
            put(root / "runs" / run_id / "images" / f"category={c}.parquet", images(run_id, c))
            put(root / "runs" / run_id / "stats" / f"category={c}.json", {"labels": n, "tuples": k + 1})
            files += [label_file, f"runs/{run_id}/images/category={c}.parquet"]
        bad = (
            [{"run_id": run_id, "image_id": "z", "uri": "z.png", "stage": "features", "error": "truncated"}]
            if not k
            else []
        )
        put(
            root / "runs" / run_id / "bad_inputs.parquet",
            pa.Table.from_pylist(
                bad, schema=pa.schema([(f, pa.string()) for f in ("run_id", "image_id", "uri", "stage", "error")])
            ),
        )
        files.append(f"runs/{run_id}/bad_inputs.parquet")
        put(
            root / "commits" / f"{run_id}.json",
            {
                "run_id": run_id,
                "committed": f"2025-01-0{k + 1}T11:00:00.000+00:00",
                "files": files,
                "counts": {"labels": sum(cats.values()), "k": 4},
            },
        )
    put(
        root / "runs" / "r3" / "run.json",
        {
            **RUN,
            "run_id": "r3",
            "config_hash": "h3",
            "started": "2025-01-03T10:00:00.000+00:00",
            "error": "RuntimeError: boom",
            "failed": "2025-01-03T10:05:00.000+00:00",
        },
    )
    put(root / "runs" / "r3" / "labels" / "category=cat" / "part-00000.parquet", labels("r3", 9, "cat"))
    for model_id, decision, day in (("m1", "promoted", 4), ("m2", "rejected", 5)):
        put(root / "models" / model_id / "adapter.pt", f"weights of {model_id}".encode())
        put(
            root / "models" / f"{model_id}.json",
            {
                "model_id": model_id,
                "parent": None,
                "label_runs": ["r1", "r2"],
                "backbone_fingerprint": "fp",
                "config": "c",
                "created": f"2025-01-0{day}T09:00:00.000+00:00",
                "metrics": {"val_pck@0.10": 0.5},
                "decision": decision,
                "decided": f"2025-01-0{day}T10:00:00.000+00:00",
                "reason": "r",
                "status": decision,
                "ray": "local",
                "checkpoint": str(root / "models" / model_id / "adapter.pt"),
                "ray_checkpoint": "/x/checkpoint_000001",
            },
        )
    put(root / "spheres" / "s1" / "mapper.pt", b"mapper")
    put(
        root / "spheres" / "s1.json",
        {
            "sphere_id": "s1",
            "label_run": "r1",
            "backbone_fingerprint": "fp",
            "images": 8,
            "train_s": 1.5,
            "checkpoint": str(root / "spheres" / "s1" / "mapper.pt"),
            "created": "2025-01-02T12:00:00.000+00:00",
        },
    )
    put(root / "features" / "fp" / "a.npz", b"features")
    return [
        str(root / "runs" / r / "labels" / f"category={c}" / "part-00000.parquet")
        for r, cats in sizes.items()
        for c in cats
    ]


def rows(store, sql, snapshot=None):
    con = store.connect(snapshot=snapshot)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_migrate_copies_what_the_old_store_showed(tmp_path, capsys):
    label_files = old_store(tmp_path / "old")
    lines = []
    summary = migrate(str(tmp_path / "old"), str(tmp_path / "new"), log=lines.append)
    assert {k: summary[k] for k in ("runs", "committed", "failed", "incomplete", "labels", "models", "spheres")} == {
        "runs": 3,
        "committed": 2,
        "failed": 1,
        "incomplete": 0,
        "labels": 19,
        "models": 2,
        "spheres": 1,
    }
    assert [line.split(": ", 1)[1] for line in lines if line.startswith("[")] == [
        "failed, record only",
        "committed, 8 labels",
        "committed, 11 labels",
    ]
    assert any("features.cache=" in line and str(tmp_path / "old" / "features") in line for line in lines)

    new = LabelStore(str(tmp_path / "new"))
    con = new.connect()
    try:
        migrated = con.execute("SELECT * FROM label_history").fetch_arrow_table()
        assert con.execute(
            "SELECT run_id, status, (counts->>'labels')::INT, label_features, code_version, started, error FROM runs "
            "ORDER BY run_id"
        ).fetchall() == [
            ("r1", "committed", 8, "fp", "0.9+abc", pd.Timestamp("2025-01-01 10:00").to_pydatetime(), None),
            ("r2", "committed", 11, "fp+adapter-m1", "0.9+abc", pd.Timestamp("2025-01-02 10:00").to_pydatetime(), None),
            (
                "r3",
                "failed",
                None,
                "fp",
                "0.9+abc",
                pd.Timestamp("2025-01-03 10:00").to_pydatetime(),
                "RuntimeError: boom",
            ),
        ]
        assert con.execute(
            "SELECT run_id, category, labels, counts->>'tuples' FROM run_stats ORDER BY 1, 2"
        ).fetchall() == [("r1", "cat", 5, "1"), ("r1", "dog", 3, "1"), ("r2", "cat", 4, "2"), ("r2", "fox", 7, "2")]
        assert con.execute("SELECT run_id, image_id, error FROM bad_inputs").fetchall() == [("r1", "z", "truncated")]
        assert con.execute("SELECT run_id, count(*) FROM images GROUP BY 1 ORDER BY 1").fetchall() == [
            ("r1", 8),
            ("r2", 8),
        ]
        assert con.execute(
            "SELECT model_id, status, decided, label_runs->>'$[1]' FROM models ORDER BY created"
        ).fetchall() == [
            ("m1", "promoted", pd.Timestamp("2025-01-04 10:00").to_pydatetime(), "r2"),
            ("m2", "rejected", pd.Timestamp("2025-01-05 10:00").to_pydatetime(), "r2"),
        ]
    finally:
        con.close()
    # the same rows as the old store's committed label files, no more, no fewer; the failed run's none
    check = duckdb.connect()
    check.register("migrated", migrated)
    cols = ", ".join(LABEL_SCHEMA.names)
    check.execute(f"CREATE TABLE old AS SELECT {cols} FROM read_parquet({label_files!r}, union_by_name = true)")
    assert check.execute("SELECT count(*) FROM migrated").fetchone() == (19,)
    for a, b in (("old", "migrated"), ("migrated", "old")):
        assert check.execute(
            f"SELECT count(*) FROM (SELECT {cols} FROM {a} EXCEPT ALL SELECT {cols} FROM {b})"
        ).fetchone() == (0,)
    check.close()
    assert not (tmp_path / "new" / "runs" / "r3").exists()
    # weights copied into the new store, which the records now name
    for m in new.models():
        assert m["checkpoint"] == str(tmp_path / "new" / "models" / m["model_id"] / "adapter.pt")
        assert open(m["checkpoint"], "rb").read() == f"weights of {m['model_id']}".encode()
    assert new.promoted_model()["model_id"] == "m1"
    (sphere,) = new.spheres()
    assert sphere["sphere_id"] == "s1" and open(sphere["checkpoint"], "rb").read() == b"mapper"

    # a store that exists is never migrated into; the command line says so and exits 2
    with pytest.raises(
        ValueError, match=f"cannot migrate {tmp_path / 'old'} into {tmp_path / 'new'}: .* already holds a store"
    ):
        migrate(str(tmp_path / "old"), str(tmp_path / "new"), log=lines.append)
    capsys.readouterr()
    assert main(["migrate", str(tmp_path / "old"), str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot migrate")
    assert main(["migrate", str(tmp_path / "new"), str(tmp_path / "newer")]) == 2  # not an old store
    assert "already is a store of this labelgen" in capsys.readouterr().err
    assert main(["migrate", str(tmp_path / "old"), str(tmp_path / "cli")]) == 0
    assert "migrated 3 runs (2 committed, 1 failed, 0 incomplete), 19 labels, 2 models" in capsys.readouterr().out


def commit(store, run_id, sizes):
    begin_run(store, run_id)
    for c, n in sizes.items():
        store.files(run_id).write_category(c, labels(run_id, n, c), images(run_id, c), {"labels": n})
    store.commit(run_id, {"labels": sum(sizes.values())}, [])
    return store.current_snapshot()


def test_maintain_compacts_and_keeps_the_snapshots_models_pinned(tmp_path):
    store = LabelStore(str(tmp_path / "store"))
    pinned = commit(store, "r1", {"cat": 5, "dog": 3})
    unpinned = commit(store, "r2", {"cat": 4, "dog": 2})
    commit(store, "r3", {"cat": 6, "fox": 1})
    store.save_model(
        {"model_id": "m1", "label_runs": ["r1"], "snapshot": pinned, "created": "2025-01-01T00:00:00.000+00:00"},
        b"weights",
    )
    everything = "SELECT * FROM label_history ORDER BY ALL"
    latest = rows(store, everything)
    assert rows(store, "SELECT count(*) FROM label_history", snapshot=unpinned) == [(14,)]
    assert rows(store, "SELECT count(*) FROM labels", snapshot=unpinned) == [
        (7,)
    ]  # r2 relabelled all but one of r1's pairs

    # a week's grace: compacted, but no snapshot expired and no file deleted (a reader may still use them)
    done = maintain(store, older_than_days=7, log=lambda line: None)
    assert done["files"]["label_history"] == (6, 1) and done["files"]["images"] == (6, 1)
    assert done["files"]["label_pairs"] == (6, 1)
    assert (done["snapshots_expired"], done["files_deleted"], done["files_waiting"]) == (0, 0, 18)
    assert rows(store, "SELECT count(*) FROM label_history", snapshot=unpinned) == [(14,)]

    lines = []
    done = maintain(store, older_than_days=0, log=lines.append)
    assert (
        done["files"]["label_history"] == (1, 1) and done["kept_pinned"] == [pinned] and done["snapshots_expired"] > 0
    )
    assert (done["files_deleted"], done["files_waiting"]) == (18, 0)
    assert rows(store, "SELECT count(*), count(DISTINCT run_id) FROM labels", snapshot=pinned) == [(8, 1)]
    assert rows(store, "SELECT run_id, status FROM runs", snapshot=pinned) == [("r1", "committed")]
    with pytest.raises(RuntimeError, match=f"could not open snapshot {unpinned} "):
        store.connect(snapshot=unpinned)
    assert rows(store, everything) == latest
    assert rows(store, "SELECT run_id, status FROM runs ORDER BY 1") == [
        ("r1", "committed"),
        ("r2", "committed"),
        ("r3", "committed"),
    ]
    assert not list((tmp_path / "store" / "runs").rglob("*.parquet"))  # merged into one file each, then deleted
    assert len(lines) == 4

    # again, on the command line: nothing left to merge, the pinned snapshot still kept
    out = subprocess.run(
        [sys.executable, "-m", "labelgen.store", "maintain", f"store={store.uri}", "older_than_days=0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "data files 3 -> 3" in out.stdout and "1 kept for models" in out.stdout
    assert rows(store, "SELECT count(*) FROM labels", snapshot=pinned) == [(8,)]


def test_help():
    out = subprocess.run(
        [sys.executable, "-m", "labelgen.store", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "migrate OLD NEW" in out.stdout and "maintain" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "labelgen.store", "maintain", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.startswith("usage: python -m labelgen.store maintain [-h] [-v] [key=value ...]")
    keys = re.findall(r"^  (\S+=\S*)\s+(.+)$", out.stdout.split("keys (", 1)[1], re.M)
    assert [k for k, _ in keys] == ["store=labelstore", "catalog=null", "older_than_days=7.0"]
    assert all(meaning for _, meaning in keys)  # the store's keys keep their comments, written once in STORE_DEFAULTS
    out = subprocess.run(
        [sys.executable, "-m", "labelgen.store", "migrate", "-h"], capture_output=True, text=True, timeout=120
    )
    assert "migrate [-h] [-v] [key=value ...] OLD NEW" in out.stdout and "catalog=null" in out.stdout


@pytest.mark.parametrize("command", ["maintain", "check", "repair", "attach"])
def test_a_missing_store_is_a_clear_error(command, tmp_path, capsys):
    assert main([command, f"store={tmp_path / 'none'}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: no label store at {tmp_path / 'none'}")


def test_flags_and_unknown_keys_are_refused(tmp_path, capsys):
    assert main(["maintain", "--store", str(tmp_path / "none"), "--older-than-days", "0"]) == 2
    err = capsys.readouterr().err
    assert "arguments ['--store', " in err and "'--older-than-days', '0'] are not key=value overrides" in err
    assert main(["check", f"store={tmp_path / 'none'}"]) == 2
    assert "no label store at" in capsys.readouterr().err
    assert main(["attach", "older_than_days=1"]) == 2
    assert "no key older_than_days; known keys: store, catalog, at" in capsys.readouterr().err
    assert (
        main(["vacuum"]) == 2
        and "name a command: migrate, maintain, check, repair, relocate, attach" in capsys.readouterr().err
    )
