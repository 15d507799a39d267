
import pyarrow as pa
import pytest

from labelgen.labels import LABEL_SCHEMA
from labelgen.store import IMAGE_SCHEMA, LabelStore, images_table


def labels(run_id, n, category="cat"):
    rows = [
        dict(run_id=run_id, category=category, src_image_id="a", tgt_image_id="b", src_x=float(i), src_y=0.0,
             tgt_x=1.0, tgt_y=2.0, hops=1, cycle_error=0.5, similarity=0.9, sphere_angle=None, support=1)
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)


def images(run_id, category="cat"):
    import pandas as pd

    frame = pd.DataFrame({"run_id": run_id, "image_id": ["a", "b"], "category": category, "uri": ["a.png", "b.png"],
                          "azimuth": [0.0, 30.0], "n_fg": [10, 12]})
    return images_table(frame)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LabelStore(str(tmp_path / "store"))
    bucket = request.getfixturevalue("s3_server")
    return LabelStore(f"{bucket}/{request.node.name}")


def begin(store, run_id, digest="h"):
    return store.begin_run({"run_id": run_id, "manifest": "m.parquet", "backbone": "mobilenetv2",
                            "backbone_fingerprint": "fp", "config": "k: 1", "config_hash": digest})


def count(store, sql):
    con = store.connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_run_is_invisible_until_its_commit_record_lands(store):
    begin(store, "r1")
    assert count(store, "SELECT count(*) FROM labels") == [(0,)]
    assert count(store, "SELECT run_id, status FROM runs") == [("r1", "incomplete")]
    store.write_category("r1", "cat", labels("r1", 5), images("r1"), {"labels": 5, "tuples": 2})
    store.write_category("r1", "cat", labels("r1", 5), images("r1"), {"labels": 5, "tuples": 2})  # a retry overwrites
    store.write_category("r1", "dog", labels("r1", 3, "dog"), images("r1", "dog"), {"labels": 3, "tuples": 1})
    assert store.staged_categories("r1") == {"cat", "dog"}
    assert store.category_stats("r1") == {"cat": {"labels": 5, "tuples": 2}, "dog": {"labels": 3, "tuples": 1}}
    assert count(store, "SELECT count(*) FROM labels") == [(0,)]
    assert count(store, "SELECT count(*) FROM images") == [(0,)]
    store.commit("r1", {"labels": 8}, [{"image_id": "z", "uri": "z.png", "stage": "features", "error": "truncated"}])
    assert count(store, "SELECT category, count(*) FROM labels GROUP BY 1 ORDER BY 1") == [("cat", 5), ("dog", 3)]
    assert count(store, "SELECT status, counts->>'labels' FROM runs") == [("committed", "8")]
    assert count(store, "SELECT image_id, error FROM bad_inputs") == [("z", "truncated")]
    assert count(store, "SELECT count(*), sum(n_fg) FROM images") == [(4, 44)]
    assert [c[0] for c in count(store, "DESCRIBE images")] == IMAGE_SCHEMA.names


def test_resume_finds_the_first_record_and_failures_are_recorded(store):
    first = begin(store, "r2", digest="one")
    assert begin(store, "r2", digest="two")["config_hash"] == "one" == first["config_hash"]
    store.update_run("r2", sphere_id="s1")
    store.fail_run("r2", "RuntimeError: boom")
    assert count(store, "SELECT status, error FROM runs") == [("failed", "RuntimeError: boom")]
    assert store.run_record("r2")["sphere_id"] == "s1" and not store.is_committed("r2")
    # a record from before label_features: its labels were made on the backbone's features
    assert count(store, "SELECT label_features FROM runs") == [("fp",)]


def test_the_catalog_is_read_only_and_sealed(store):
    begin(store, "r3")
    store.write_category("r3", "cat", labels("r3", 2), images("r3"), {"labels": 2})
    store.commit("r3", {"labels": 2}, [])
    con = store.connect()
    try:
        for sql in ("DELETE FROM runs", "CREATE TABLE t (x INT)", "COPY runs TO '/tmp/runs.csv'",
                    "SELECT * FROM read_csv('/etc/passwd')", "SET enable_external_access = true"):
            with pytest.raises(Exception, match="read-only|Permission|disabled|Cannot change"):
                con.execute(sql)
        assert con.execute("SELECT count(*) FROM labels").fetchone() == (2,)
    finally:
        con.close()


def test_true_xy_maps_through_the_homographies(store):
    begin(store, "r4")
    store.write_category("r4", "cat", labels("r4", 1), images("r4"), {})
    store.commit("r4", {}, [])
    got = count(store, "SELECT true_xy([1,0,0,0,1,0,0,0,1]::DOUBLE[], [2,0,1,0,2,0,0,0,1]::DOUBLE[], 3, 4)")
    assert got == [([7.0, 8.0],)]


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no label store at .*run `python -m labelgen.run` first"):
        LabelStore(str(tmp_path / "none")).connect()
