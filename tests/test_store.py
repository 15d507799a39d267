import json
import re
import shutil
import threading
from pathlib import Path

import duckdb
import pytest

from labelgen.io import is_remote, read_bytes
from labelgen.store import IMAGE_SCHEMA, LabelStore, catalog, extensions, images_table
from tests.support.tiny import begin_run, label_table


def labels(run_id, n, category="cat"):
    return label_table(run_id, category, {("a", "b"): n})


def images(run_id, category="cat"):
    import pandas as pd

    frame = pd.DataFrame(
        {
            "run_id": run_id,
            "image_id": ["a", "b"],
            "category": category,
            "uri": ["a.png", "b.png"],
            "azimuth": [0.0, 30.0],
            "n_fg": [10, 12],
        }
    )
    return images_table(frame)


@pytest.fixture(params=["local", "s3", "postgres"])
def store(request, tmp_path):
    """The three set-ups: SQLite catalog + local data, SQLite catalog + S3 data, PostgreSQL catalog + local data."""
    if request.param == "local":
        return LabelStore(str(tmp_path / "store"))
    if request.param == "postgres":
        name = "t_" + re.sub(r"\W", "_", request.node.name)[:50].lower()
        return LabelStore(str(tmp_path / "store"), catalog=request.getfixturevalue("postgres")(name))
    bucket = request.getfixturevalue("s3_server")
    name = request.node.name.replace("[", "-").rstrip("]")  # no glob characters
    return LabelStore(f"{bucket}/{name}", catalog=f"sqlite:{tmp_path}/catalog.sqlite")


def count(store, sql):
    con = store.connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_category_in_vote_partitions_is_done_when_every_partition_is(store):
    begin_run(store, "r1")
    store.files("r1").write_images("cat", images("r1"), {"tuples": 2, "seeds": 40}, parts=2)
    store.files("r1").write_part("cat", 0, labels("r1", 3), {"voted": 4, "labels": 3})
    assert store.files("r1").done_categories() == set()  # partition 1 is missing: a resume redoes the category
    store.files("r1").write_part("cat", 1, labels("r1", 2), {"voted": 2, "labels": 2})
    assert store.files("r1").done_categories() == {"cat"}
    assert store.files("r1").category_stats() == {"cat": {"tuples": 2, "seeds": 40, "voted": 6, "labels": 5}}
    store.commit("r1", {"labels": 5}, [])
    assert count(store, "SELECT count(*) FROM labels") == [(5,)]
    assert json.loads(count(store, "SELECT counts FROM run_stats")[0][0]) == {
        "tuples": 2,
        "seeds": 40,
        "voted": 6,
        "labels": 5,
    }


def test_a_run_is_invisible_until_its_commit_record_lands(store):
    begin_run(store, "r1")
    assert count(store, "SELECT count(*) FROM labels") == [(0,)]
    assert count(store, "SELECT run_id, status FROM runs") == [("r1", "incomplete")]
    store.files("r1").write_category("cat", labels("r1", 5), images("r1"), {"labels": 5, "tuples": 2})
    store.files("r1").write_category(
        "cat", labels("r1", 5), images("r1"), {"labels": 5, "tuples": 2}
    )  # a retry overwrites
    store.files("r1").write_category("dog", labels("r1", 3, "dog"), images("r1", "dog"), {"labels": 3, "tuples": 1})
    assert store.files("r1").done_categories() == {"cat", "dog"}
    assert store.files("r1").category_stats() == {"cat": {"labels": 5, "tuples": 2}, "dog": {"labels": 3, "tuples": 1}}
    assert count(store, "SELECT count(*) FROM labels") == [(0,)]
    assert count(store, "SELECT count(*) FROM images") == [(0,)]
    store.commit("r1", {"labels": 8}, [{"image_id": "z", "uri": "z.png", "stage": "features", "error": "truncated"}])
    assert count(store, "SELECT category, count(*) FROM labels GROUP BY 1 ORDER BY 1") == [("cat", 5), ("dog", 3)]
    assert count(store, "SELECT status, counts->>'labels' FROM runs") == [("committed", "8")]
    assert count(store, "SELECT image_id, error FROM bad_inputs") == [("z", "truncated")]
    assert count(store, "SELECT count(*), sum(n_fg) FROM images") == [(4, 44)]
    assert [c[0] for c in count(store, "DESCRIBE images")] == IMAGE_SCHEMA.names
    assert count(store, "SELECT category, labels, image_pairs, counts->>'tuples' FROM run_stats ORDER BY 1") == [
        ("cat", 5, 1, "2"),
        ("dog", 3, 1, "1"),
    ]
    if not is_remote(store.uri):  # small tables' rows live in the catalog: no Parquet file per run state or stat
        assert not list(Path(store.uri, "lake").rglob("*.parquet"))


def test_a_commit_is_retried_whole_on_a_lock_conflict_unless_it_landed():
    tries = []

    def attempt():
        tries.append(1)
        if len(tries) < 3:
            raise duckdb.TransactionException("TransactionContext Error: Failed to commit: database is locked")
        return "done"

    assert catalog.retrying("commit", attempt) == "done" and len(tries) == 3
    tries.clear()
    assert (
        catalog.retrying("commit", attempt, committed=lambda: True) is None and len(tries) == 1
    )  # it landed: no second
    with pytest.raises(duckdb.BinderException):  # not a conflict: at once
        catalog.retrying("commit", lambda: (_ for _ in ()).throw(duckdb.BinderException("no such column")))


def test_resume_finds_the_first_record_and_failures_are_recorded(store):
    first = begin_run(store, "r2", digest="one")
    assert begin_run(store, "r2", digest="two")["config_hash"] == "one" == first["config_hash"]
    store.update_run("r2", sphere_id="s1")
    store.fail_run("r2", "RuntimeError: boom")
    assert count(store, "SELECT status, error FROM runs") == [("failed", "RuntimeError: boom")]
    assert store.run_record("r2")["sphere_id"] == "s1" and not store.is_committed("r2")
    # a run that names no label features made its labels on the backbone's
    assert count(store, "SELECT label_features FROM runs") == [("fp",)]


def test_the_catalog_is_read_only_and_sealed(store):
    begin_run(store, "r3")
    store.files("r3").write_category("cat", labels("r3", 2), images("r3"), {"labels": 2})
    store.commit("r3", {"labels": 2}, [])
    con = store.connect()
    # an extension of the same trusted wheels that this set-up has not loaded
    other = "sqlite_scanner" if (store.catalog or "").startswith("postgres:") else "postgres_scanner"
    try:
        for sql in (
            "DELETE FROM label_history",
            "INSERT INTO run_log (run_id) VALUES ('x')",
            "CREATE TABLE t (x INT)",
            "COPY runs TO '/tmp/runs.csv'",
            f"LOAD '{extensions.extension_path(other)}'",
            "INSTALL spatial",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SET enable_external_access = true",
        ):
            with pytest.raises(Exception, match="read-only|Permission|disabled|Cannot change"):
                con.execute(sql)
        assert con.execute("SELECT count(*) FROM labels").fetchone() == (2,)
    finally:
        con.close()


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no label store at .*run `python -m labelgen.run store=.*` first"):
        LabelStore(str(tmp_path / "none")).connect()


def test_a_new_store_refuses_the_catalog_of_another_store_and_completes_its_own(tmp_path):
    shared = f"sqlite:{tmp_path}/shared.sqlite"
    begin_run(LabelStore(str(tmp_path / "a"), shared), "r1")
    with pytest.raises(
        ValueError, match=r"store .*/b is new \(no catalog.json\) but its catalog .*shared.sqlite already exists"
    ):
        begin_run(LabelStore(str(tmp_path / "b"), shared), "r1")
    (
        tmp_path / "a" / "catalog.json"
    ).unlink()  # a creation cut short before its last step: the next writer completes it
    begin_run(LabelStore(str(tmp_path / "a"), shared), "r2")
    assert (tmp_path / "a" / "catalog.json").exists() and count(
        LabelStore(str(tmp_path / "a")), "SELECT count(*) FROM runs"
    ) == [(2,)]


WRITER = """
import sys
import pyarrow as pa
from labelgen.store import LABEL_SCHEMA, LabelStore, images_table
import pandas as pd

uri, catalog, prefix, n = sys.argv[1], sys.argv[2] or None, sys.argv[3], int(sys.argv[4])
store = LabelStore(uri, catalog)
for i in range(n):
    run_id = f"{prefix}-{i}"
    store.begin_run({"run_id": run_id, "config_hash": "h", "config": "k: 1"})
    for category, size in (("cat", 7), ("dog", 5)):
        rows = [dict(run_id=run_id, category=category, src_image_id="a", tgt_image_id="b", src_x=float(j), src_y=0.0,
                     tgt_x=1.0, tgt_y=2.0, hops=1, support=1) for j in range(size)]
        frame = pd.DataFrame({"run_id": run_id, "image_id": ["a", "b"], "category": category, "uri": "x.png"})
        table = pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)
        store.files(run_id).write_category(category, table, images_table(frame), {"labels": size})
    store.commit(run_id, {"labels": 12}, [])
"""


@pytest.mark.parametrize("setup", ["sqlite", "postgres"])
def test_two_concurrent_writers_land_every_run_once_and_a_reader_never_sees_half_a_run(setup, tmp_path, request):
    import subprocess
    import sys
    import time

    catalog = request.getfixturevalue("postgres")(f"concurrent_{setup}") if setup == "postgres" else ""
    store, n = LabelStore(str(tmp_path / "store"), catalog or None), 8
    store.begin_run({"run_id": "seed", "config_hash": "h", "config": "k: 1"})  # created before the writers race
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store.uri, catalog, name, str(n)], stderr=subprocess.PIPE, text=True
        )
        for name in ("one", "two")
    ]
    looks = 0
    while any(w.poll() is None for w in writers):
        con = store.connect()
        try:
            con.execute("BEGIN")  # one snapshot for both queries
            per_run = dict(con.execute("SELECT run_id, count(*) FROM label_history GROUP BY run_id").fetchall())
            committed = {r for (r,) in con.execute("SELECT run_id FROM runs WHERE status = 'committed'").fetchall()}
            con.execute("COMMIT")
        finally:
            con.close()
        assert set(per_run) == committed and set(per_run.values()) <= {12}, (per_run, committed)  # all of a run or none
        looks += 1
        time.sleep(0.05)
    assert [w.wait() for w in writers] == [0, 0], [w.stderr.read()[-2000:] for w in writers]
    con = store.connect()
    try:
        assert con.execute("SELECT count(*), count(DISTINCT run_id) FROM label_history").fetchone() == (24 * n, 2 * n)
        assert con.execute("SELECT count(*) FROM runs WHERE status = 'committed'").fetchone() == (2 * n,)
        assert con.execute(
            "SELECT count(*), count(DISTINCT snapshot) FROM runs WHERE status = 'committed'"
        ).fetchone() == (2 * n, 2 * n)  # a snapshot each
    finally:
        con.close()
    assert looks > 3


def test_training_reads_the_runs_of_a_snapshot_from_files_the_driver_resolved(tmp_path):
    from omegaconf import OmegaConf

    from trainer.data import default_conf, load_label_data
    from trainer.source import resolve_source

    store = LabelStore(str(tmp_path / "store"))
    for run_id, n in (("r1", 5), ("r2", 3)):
        store.begin_run(
            {
                "run_id": run_id,
                "backbone": "mobilenetv2",
                "backbone_fingerprint": "fp",
                "config_hash": "h",
                "config": "features: {cache: null, flips: false}",
            }
        )
        store.files(run_id).write_category("cat", labels(run_id, n), images(run_id), {})
        store.commit(run_id, {"labels": n}, [])
    first = count(store, "SELECT snapshot FROM runs WHERE run_id = 'r1'")[0][0]
    conf = OmegaConf.merge(default_conf, {"store": store.uri})
    latest = resolve_source(conf)
    assert latest["runs"] == ["r1", "r2"] and latest["snapshot"] == store.current_snapshot()
    pinned = resolve_source(OmegaConf.merge(conf, {"snapshot": first}))
    files = pinned["label_history"] + pinned["label_pairs"] + pinned["images"]
    assert pinned["runs"] == ["r1"] and all(f.startswith(store.uri) for f in files)
    data = load_label_data(pinned, "none")  # files only: a Train worker never opens the catalog
    assert data.snapshot == first and [len(p.src_xy) for p in data.train] == [5]
    assert [len(p.src_xy) for p in load_label_data(latest, "none").train] == [3]  # r2 relabelled the pair: counted once


def test_the_latest_run_that_examined_a_pair_holds_its_current_labels(store):
    begin_run(store, "r1")
    store.files("r1").write_category("cat", label_table("r1", "cat", {("a", "b"): 3, ("b", "a"): 2}), images("r1"), {})
    store.commit("r1", {}, [])
    pinned = store.current_snapshot()
    begin_run(store, "r2")  # relabels a -> b, and examines b -> a but keeps none of its candidates
    examined = label_table("r2", "cat", {("a", "b"): 4, ("b", "a"): 1, ("a", "c"): 1})
    kept = label_table("r2", "cat", {("a", "b"): 4, ("a", "c"): 1})
    store.files("r2").write_images("cat", images("r2"), {}, parts=1)
    store.files("r2").write_part("cat", 0, kept, {}, examined)
    store.commit("r2", {}, [])
    assert count(
        store, "SELECT run_id, src_image_id, tgt_image_id, count(*) FROM labels GROUP BY ALL ORDER BY ALL"
    ) == [("r2", "a", "b", 4), ("r2", "a", "c", 1)]
    assert count(store, "SELECT run_id, count(*) FROM label_history GROUP BY ALL ORDER BY ALL") == [
        ("r1", 5),
        ("r2", 5),
    ]
    assert count(store, "SELECT src_image_id, tgt_image_id, run_id, labels, runs FROM current_pairs ORDER BY ALL") == [
        ("a", "b", "r2", 4, 2),
        ("a", "c", "r2", 1, 1),
        ("b", "a", "r2", 0, 2),
    ]
    assert count(
        store,
        "SELECT count(*) = (SELECT count(*) FROM (SELECT DISTINCT src_image_id, tgt_image_id, src_x, src_y FROM "
        "labels)) FROM labels",
    ) == [(True,)]
    con = store.connect(snapshot=pinned)  # what a model that pinned r1's snapshot read
    try:
        assert con.execute("SELECT run_id, count(*) FROM labels GROUP BY ALL").fetchall() == [("r1", 5)]
    finally:
        con.close()


def test_images_in_a_tuple_of_a_committed_run_count_as_labelled_for_its_features_and_label_config(store):
    store.begin_run(
        {
            "run_id": "r1",
            "backbone_fingerprint": "fp",
            "label_features": "fp",
            "label_hash": "L1",
            "config": "",
            "config_hash": "h",
        }
    )
    frame = images("r1").to_pandas()
    frame.loc[1, "n_fg"] = None  # b took part in no tuple
    store.files("r1").write_category("cat", labels("r1", 2), images_table(frame), {})
    later = "2999-01-01T00:00:00+00:00"
    assert store.labelled_images("fp", "L1", later) == set()  # not committed yet
    store.commit("r1", {}, [])
    assert store.labelled_images("fp", "L1", later) == {"a"}
    assert store.labelled_images("fp", "L2", later) == store.labelled_images("fp+adapter-m", "L1", later) == set()
    assert store.labelled_images("fp", "L1", "2000-01-01T00:00:00+00:00") == set()  # a run started before r1 committed
    assert store.source_images() == {"a"}


def test_a_store_of_the_layout_before_current_labels_is_upgraded_on_its_first_write(tmp_path):
    store = LabelStore(str(tmp_path / "store"))
    begin_run(store, "r1")
    store.files("r1").write_category("cat", label_table("r1", "cat", {("a", "b"): 3, ("b", "a"): 2}), images("r1"), {})
    store.commit("r1", {}, [])
    con = catalog.attach(store.uri)  # back to the previous layout: one labels table, no label_pairs, no label_hash
    for sql in (
        "DROP VIEW lake.labels",
        "DROP VIEW lake.current_pairs",
        "DROP TABLE lake.label_pairs",
        "CREATE TABLE lake.labels AS FROM lake.label_history",
        "DROP TABLE lake.label_history",
        "ALTER TABLE lake.run_log DROP COLUMN label_hash",
    ):
        con.execute(sql)
    con.close()
    old = store.current_snapshot()
    begin_run(store, "r2")  # the first write upgrades it
    assert count(store, "SELECT run_id, src_image_id, tgt_image_id, labels FROM current_pairs ORDER BY ALL") == [
        ("r1", "a", "b", 3),
        ("r1", "b", "a", 2),
    ]
    assert count(store, "SELECT count(*) FROM labels") == count(store, "SELECT count(*) FROM label_history") == [(5,)]
    assert count(store, "SELECT run_id, label_hash FROM runs ORDER BY 1") == [("r1", None), ("r2", None)]
    snapshot = store.current_snapshot()
    assert all(
        store.data_files(t, snapshot) for t in ("label_history", "label_pairs")
    )  # files: Train workers read them
    con = store.connect(snapshot=old)  # before the upgrade: the table as it was
    try:
        assert con.execute("SELECT count(*) FROM labels").fetchone() == (5,)
    finally:
        con.close()


@pytest.mark.parametrize(
    "store", ["local", "postgres"], indirect=True
)  # on S3 alike, after DuckDB's HTTP retries: ~1 min
def test_check_names_a_deleted_or_damaged_data_file_with_its_run_and_reports_say_so(store, capsys):
    from labelgen.io import filesystem, write_bytes
    from labelgen.store.__main__ import main
    from queries import run_sql

    for run_id in ("r1", "r2"):
        begin_run(store, run_id)
        store.files(run_id).write_category("cat", labels(run_id, 5), images(run_id), {"labels": 5})
        store.commit(run_id, {"labels": 5}, [])
    args = ["check", f"store={store.uri}", *([f"catalog={store.catalog}"] if store.catalog else [])]
    assert main(args) == 0
    assert "whole (12 tables and views read, 6 data files checked)" in capsys.readouterr().out

    deleted, damaged = store.files("r1").part_uri("cat"), store.files("r2").images_uri("cat")
    fs, path = filesystem(deleted)
    fs.delete_file(path)
    write_bytes(damaged, b"not parquet any more")
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"{deleted} (run r1): missing" in out and f"{damaged} (run r2): 20 bytes, registered with" in out
    assert "restore it from a backup" in out and "run(s) r1, r2 committed still reads" in out
    with pytest.raises(ValueError, match="the data file .* of run r[12] is missing or damaged .*labelgen.store check"):
        run_sql(store.uri, "SELECT count(*) FROM labels JOIN images USING (run_id)", catalog=store.catalog)


def test_a_commit_waits_for_a_restarting_catalog_server_and_says_so_when_it_stays_away(postgres, tmp_path, monkeypatch):
    store = LabelStore(str(tmp_path / "store"), catalog=postgres("restarting"))
    begin_run(store, "r1")
    store.files("r1").write_category("cat", labels("r1", 5), images("r1"), {"labels": 5})
    postgres.stop()
    threading.Timer(3.0, postgres.start).start()  # a restart: down for a few seconds
    store.commit("r1", {"labels": 5}, [])
    assert count(store, "SELECT status, (SELECT count(*) FROM labels) FROM runs") == [("committed", 5)]

    monkeypatch.setattr(catalog, "ATTEMPTS", 3)
    postgres.stop()
    try:
        with pytest.raises(
            catalog.CatalogUnreachable, match=r"the catalog's server did not answer for \d+ s .*start it"
        ):
            store.update_run("r1", status="x")
    finally:
        postgres.start()


@pytest.mark.parametrize("store", ["local", "postgres"], indirect=True)
def test_a_catalog_whose_files_name_lost_column_maps_is_refused_on_open_and_repaired(store, capsys):
    from labelgen.store.__main__ import main

    for run_id in ("r1", "r2"):
        begin_run(store, run_id)
        store.files(run_id).write_category("cat", labels(run_id, 5), images(run_id), {"labels": 5})
        store.commit(run_id, {"labels": 5}, [])
    ((first,),) = count(store, "SELECT snapshot FROM runs WHERE run_id = 'r1'")
    con = catalog.attach(store.uri, store.catalog)  # a first file naming a lost map: what DuckLake 1.4's retry leaves
    con.execute(
        "UPDATE __ducklake_metadata_lake.ducklake_data_file SET mapping_id = mapping_id + 1000 WHERE data_file_id = "
        "(SELECT min(data_file_id) FROM __ducklake_metadata_lake.ducklake_data_file WHERE mapping_id IS NOT NULL)"
    )
    con.close()
    with pytest.raises(RuntimeError, match=r"the catalog is damaged: 1 data file\(s\) .* labelgen.store repair store="):
        store.connect()
    args = [f"store={store.uri}", *([f"catalog={store.catalog}"] if store.catalog else [])]
    assert main(["check", *args]) == 1 and "the catalog is damaged" in capsys.readouterr().out
    store.connect(snapshot=first - 1).close()  # the store before the damaged commit still reads
    assert main(["repair", *args]) == 0
    assert "1 data file(s) repaired" in capsys.readouterr().out
    assert count(store, "SELECT run_id, count(*), sum(n_fg) FROM images GROUP BY 1 ORDER BY 1") == [
        ("r1", 2, 22),
        ("r2", 2, 22),
    ]
    assert count(store, "SELECT run_id, count(*) FROM label_history GROUP BY 1 ORDER BY 1") == [("r1", 5), ("r2", 5)]


@pytest.mark.parametrize("store", ["local", "postgres"], indirect=True)
def test_a_model_whose_scores_are_nan_is_saved_with_null_scores(store):
    """Trained without held-out pairs, a model's scores are NaN: PostgreSQL's JSON refuses NaN
    (found by tests.faults.kills: the trainer could not register such a model there)."""
    store.save_model(
        {
            "model_id": "m",
            "label_runs": ["r1"],
            "created": "2025-01-01T00:00:00.000+00:00",
            "metrics": {"steps": 4, "adapter_val_pck@0.10": float("nan"), "curve": [1.0, float("inf")]},
        }
    )
    assert store.models()[0]["metrics"] == {"steps": 4, "adapter_val_pck@0.10": None, "curve": [1.0, None]}


def test_the_feature_cache_is_the_given_one_else_features_in_the_store(tmp_path):
    store = LabelStore(str(tmp_path / "store"))
    assert store.feature_cache() == store.feature_cache("") == str(tmp_path / "store" / "features")
    assert store.feature_cache("s3://cache/features") == "s3://cache/features"


def test_the_latest_run_is_the_latest_committed_that_holds_current_labels_unless_named(tmp_path):
    store = LabelStore(str(tmp_path / "store"))
    for run_id in ("r1", "r2", "r3"):
        begin_run(store, run_id)
    store.files("r1").write_category("cat", labels("r1", 2), images("r1"), {})
    store.commit("r1", {}, [])
    store.commit("r2", {}, [])  # a repeated run that labelled nothing: it holds no current labels; r3 never commits
    assert store.latest_run()["run_id"] == "r1" and store.latest_run()["config"] == "k: 1"
    assert store.latest_run(current=False)["run_id"] == store.latest_run("r2")["run_id"] == "r2"
    assert store.latest_run("r3") is None and store.latest_run("nope") is None


def test_a_model_is_named_latest_promoted_or_by_its_id_and_has_weights(tmp_path):
    store = LabelStore(str(tmp_path / "store"))
    assert store.model("latest") is None and store.model("promoted") is None
    for i, (model_id, decision) in enumerate((("m1", "promoted"), ("m2", "rejected"), ("m3", None))):
        record = {"model_id": model_id, "label_runs": ["r1"], "created": f"2025-01-0{i + 1}T00:00:00.000+00:00"}
        if decision:  # decided with weights; m3 is still training
            store.save_model({**record, "decision": decision, "decided": record["created"]}, b"weights")
        else:
            store.save_model(record)
    assert store.model("latest")["model_id"] == "m2" and store.model("promoted")["model_id"] == "m1"
    assert store.model("m1")["checkpoint"] == store.model_uri("m1", "adapter.pt")
    assert store.model("m3") is None and store.model("m4") is None  # training: no weights yet


def committed_store(uri: str, catalog: str | None = None) -> LabelStore:
    """A store with two committed runs (r1's labels superseded by r2's on one pair) and a model."""
    store = LabelStore(uri, catalog)
    for run_id, n in (("r1", 3), ("r2", 2)):
        begin_run(store, run_id)
        store.files(run_id).write_category("cat", labels(run_id, n), images(run_id), {})
        store.commit(run_id, {}, [])
    store.save_model({"model_id": "m1", "label_runs": ["r1"], "created": "2025-01-01T00:00:00.000+00:00"}, b"w1")
    return store


def facts(store: LabelStore, at: int | None = None) -> tuple:
    con = store.connect(snapshot=at)
    try:
        labels_now = con.execute("SELECT run_id, count(*) FROM labels GROUP BY 1").fetchall()
        history = con.execute("SELECT count(*) FROM label_history").fetchone()[0]
    finally:
        con.close()
    return labels_now, history


def test_a_copied_moved_or_synced_store_opens_labels_and_loads_its_models_at_its_new_place(tmp_path, s3_server):
    import boto3

    original = committed_store(str(tmp_path / "a"))
    first = original.current_snapshot() - 1  # r1's commit: the model's snapshot is still readable
    expected = facts(original), facts(original, first)
    files = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}

    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    copy = LabelStore(str(tmp_path / "copy"))
    assert (facts(copy), facts(copy, first)) == expected
    assert read_bytes(copy.model("m1")["checkpoint"]) == b"w1" and copy.model("m1")["checkpoint"].startswith(copy.uri)
    assert all(f.startswith(copy.uri) for f in copy.data_files("label_history", copy.current_snapshot()))
    begin_run(copy, "r3")  # the copy takes new runs; the original never sees them
    copy.files("r3").write_category("cat", labels("r3", 7), images("r3"), {})
    copy.commit("r3", {}, [])
    assert facts(copy)[0] == [("r3", 7)]
    assert {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()} == files
    assert (facts(original), facts(original, first)) == expected

    shutil.move(tmp_path / "copy", tmp_path / "moved")
    assert facts(LabelStore(str(tmp_path / "moved")))[0] == [("r3", 7)]

    s3 = boto3.client("s3")  # to S3 and back, as `aws s3 sync` does
    bucket, prefix = s3_server.removeprefix("s3://"), "synced"
    for p in (tmp_path / "moved").rglob("*"):
        if p.is_file():
            s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(tmp_path / 'moved')}")
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")["Contents"]:
        (tmp_path / "back" / obj["Key"][len(prefix) + 1 :]).parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, obj["Key"], str(tmp_path / "back" / obj["Key"][len(prefix) + 1 :]))
    back = LabelStore(str(tmp_path / "back"))
    assert facts(back)[0] == [("r3", 7)] and read_bytes(back.model("m1")["checkpoint"]) == b"w1"


def test_a_store_on_a_shared_catalog_says_how_to_relocate_a_copy_or_a_move(tmp_path, postgres, capsys):
    from labelgen.store.__main__ import main

    original = committed_store(str(tmp_path / "a"), postgres("shared_a"))
    expected = facts(original)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    with pytest.raises(ValueError, match=r"is a copy of .*/a, and both name the catalog .*createdb -T OLD NEW"):
        LabelStore(str(tmp_path / "copy")).connect()
    postgres.pg("createdb", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "labelgen", "-T", "shared_a", "shared_b")
    catalog_b = f"postgres:{postgres.dsn} dbname=shared_b"
    assert main(["relocate", f"store={tmp_path / 'copy'}", f"catalog={catalog_b}"]) == 0
    assert "catalog points here" in capsys.readouterr().out
    copy = LabelStore(str(tmp_path / "copy"))
    assert facts(copy) == facts(original) == expected and copy.model("m1")["checkpoint"].startswith(copy.uri)

    shutil.move(tmp_path / "a", tmp_path / "moved")
    with pytest.raises(ValueError, match=r"was moved from .*/a.*relocate store=.*/moved"):
        LabelStore(str(tmp_path / "moved")).connect()
    assert main(["relocate", f"store={tmp_path / 'moved'}"]) == 0
    assert facts(LabelStore(str(tmp_path / "moved"))) == expected
