import pyarrow as pa
import pytest

from labelgen.labels import LABEL_SCHEMA
from labelgen.store import LabelStore


def table(run_id, n):
    return pa.table(
        {
            "run_id": [run_id] * n, "category": ["cat"] * n, "src_image_id": ["a"] * n, "tgt_image_id": ["b"] * n,
            "src_x": [float(i) for i in range(n)], "src_y": [0.0] * n, "tgt_x": [1.0] * n, "tgt_y": [2.0] * n,
            "hops": [1] * n, "cycle_error": [0.5] * n, "similarity": [0.9] * n, "sphere_angle": [None] * n,
            "support": [1] * n,
        },
        schema=LABEL_SCHEMA,
    )


def test_labels_are_visible_only_once_the_run_commits(tmp_path):
    store = LabelStore(str(tmp_path))
    store.begin_run("r1", "m.parquet", "mobilenetv2", "fp", "conf: 1", "h")
    con = store.connect()
    assert con.execute("SELECT count(*) FROM labels").fetchone() == (0,)  # typed, empty
    assert [c[0] for c in con.execute("DESCRIBE labels").fetchall()] == LABEL_SCHEMA.names
    con.close()
    store.write_part(table("r1", 5), "r1", "cat", 0)
    store.write_part(table("r1", 5), "r1", "cat", 0)  # a retried task overwrites its part
    con = store.connect()
    assert con.execute("SELECT count(*) FROM labels").fetchone() == (0,)
    con.close()
    store.finish_run("r1", {"labels": 5})
    con = store.connect()
    assert con.execute("SELECT count(*), min(src_x), max(src_x) FROM labels").fetchone() == (5, 0.0, 4.0)
    assert con.execute("SELECT status, counts->>'labels' FROM runs").fetchone() == ("committed", "5")
    with pytest.raises(Exception, match="read-only"):
        con.execute("DELETE FROM runs")
    con.close()


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no label store at .*run `python -m labelgen.run` first"):
        LabelStore(str(tmp_path / "none")).connect()
