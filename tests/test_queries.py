"""The query CLI over a small store written through the store's own API (no Ray)."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from labelgen.store import LABEL_SCHEMA, LabelStore, images_table
from queries import report_names
from queries.__main__ import main

SHIFT = np.array([1.0, 0, 10, 0, 1, 0, 0, 0, 1])  # the target view is the source shifted 10 px right


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    for name in ("a", "b"):
        Image.new("RGB", (100, 80), (200, 100, 50)).save(root / f"{name}.png")
    store = LabelStore(str(root / "store"))
    for run_id, offsets in (("r1", [10.0, 10.0, 40.0]), ("r2", [10.0, 10.0])):
        store.begin_run({"run_id": run_id, "config_hash": "h", "config": "k: 1"})
        rows = [
            dict(
                run_id=run_id,
                category="cat",
                src_image_id="a",
                tgt_image_id="b",
                src_x=10.0 * i,
                src_y=5.0,
                tgt_x=10.0 * i + d,
                tgt_y=5.0,
                hops=1,
                cycle_error=float(i),
                similarity=0.8,
                sphere_angle=None,
                support=2,
            )
            for i, d in enumerate(offsets)
        ]
        images = pd.DataFrame(
            {
                "run_id": run_id,
                "image_id": ["a", "b", "c"],
                "category": "cat",
                "uri": [str(root / "a.png"), str(root / "b.png"), str(root / "a.png")],
                "azimuth": [0.0, 30.0, None],
                "width": 100,
                "height": 80,
                "n_fg": [20, 20, None],
                "homography": [np.eye(3).flatten().tolist(), SHIFT.tolist(), None],
            }
        )
        store.files(run_id).write_category(
            "cat", pa.Table.from_pylist(rows, schema=LABEL_SCHEMA), images_table(images), {}
        )
        store.commit(run_id, {"seeds": 10, "after_hop1": 8, "candidates": 5, "labels": len(rows)}, [])
    return str(root / "store")


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_report_runs(store, capsys):
    for name in report_names():
        code, out, err = cli(capsys, name, f"store={store}", "format=json")
        assert code == 0, (name, err)
        json.loads(out)


def test_precision_against_truth(store, capsys):
    code, out, _ = cli(capsys, "precision", f"store={store}", "format=json", "param=[unused=1]")
    rows = {r["run_id"]: r for r in json.loads(out)}
    assert list(rows) == ["r2"] and rows["r2"]["labels"] == 2 and rows["r2"]["p_10"] == 1.0  # r2 relabelled r1's pair
    r1 = commit_of(store, capsys, "r1")
    code, out, _ = cli(capsys, "precision", f"store={store}", "format=json", f"at={r1}")
    rows = {r["run_id"]: r for r in json.loads(out)}
    # r1: two labels on the true shift, one 30 px off (side 100 px: 5 px and 10 px thresholds)
    assert rows["r1"]["labels"] == 3 and rows["r1"]["p_05"] == pytest.approx(0.667, abs=1e-3)


def commit_of(store, capsys, run_id) -> int:
    _, out, _ = cli(capsys, "runs", f"store={store}", "format=json")
    return next(r["snapshot"] for r in json.loads(out) if r["run_id"] == run_id)


def test_compare_empty_images_and_stage_yield(store, capsys):
    _, out, _ = cli(capsys, "compare", f"store={store}", "format=json")
    assert json.loads(out) == [
        {
            "run_a": "r1",
            "run_b": "r2",
            "category": "cat",
            "labels_a": 3,
            "labels_b": 2,
            "shared": 2,
            "only_a": 1,
            "only_b": 0,
        }
    ]
    _, out, _ = cli(capsys, "compare", f"store={store}", "format=json", "param=[a=r2,b=r1]")
    assert json.loads(out)[0]["only_b"] == 1
    _, out, _ = cli(capsys, "empty_images", f"store={store}", "format=json")
    assert {(r["image_id"], r["likely_reason"]) for r in json.loads(out)} == {
        ("c", "no azimuth: takes part in no tuple")
    }
    _, out, _ = cli(capsys, "stage_yield", f"store={store}", "format=csv")
    assert "r1,after_hop1,8,0.8,0.8" in out


def test_plots_are_drawn(store, capsys, tmp_path):
    for name in ("labels_per_category", "pairs", "cycle_error"):
        code, _, err = cli(capsys, name, f"store={store}", "plot=" + str(tmp_path / f"{name}.png"))
        assert code == 0, err
        assert Image.open(tmp_path / f"{name}.png").size[0] > 100


def test_free_sql_is_read_only_and_errors_are_clear(store, capsys):
    code, out, _ = cli(capsys, "sql", "SELECT count(*) AS n FROM labels", f"store={store}", "format=csv")
    assert code == 0 and out.splitlines() == ["n", "2"]  # current labels: r2's of the pair both runs labelled
    code, _, err = cli(capsys, "sql", "DELETE FROM label_history", f"store={store}")
    assert code == 2 and "read-only" in err
    code, _, err = cli(capsys, "nope", f"store={store}")
    assert code == 2 and "no report 'nope'" in err
    code, _, err = cli(capsys, "runs", f"store={store}", "plot=x.png")
    assert code == 2 and "has no chart" in err


def test_snapshots_go_back_to_a_commit(store, capsys):
    code, out, err = cli(capsys, "snapshots", f"store={store}", "format=json")
    assert code == 0, err
    commits = {s["run_id"]: s["snapshot"] for s in json.loads(out) if s["run_id"]}
    assert list(commits) == ["r2", "r1"] and commits["r1"] < commits["r2"]
    code, out, err = cli(capsys, "runs", f"store={store}", "format=json")
    assert {r["run_id"]: r["snapshot"] for r in json.loads(out)} == commits  # each run records its commit
    sql = "SELECT string_agg(DISTINCT run_id) AS runs, count(*) AS n FROM labels"
    assert cli(capsys, "sql", sql, f"store={store}", f"at={commits['r1']}", "format=csv")[1].splitlines() == [
        "runs,n",
        "r1,3",
    ]
    assert cli(capsys, "sql", sql, f"store={store}", f"at={commits['r1'] - 1}", "format=csv")[1].splitlines() == [
        "runs,n",
        ",0",
    ]
    code, _, err = cli(capsys, "runs", f"store={store}", "at=999")
    assert code == 2 and "snapshot 999" in err


def test_the_truth_functions_come_with_the_sql_that_calls_them(store):
    import duckdb

    from queries import functions, run_sql

    sql = "SELECT True_XY([1,0,0,0,1,0,0,0,1]::DOUBLE[], [2,0,1,0,2,0,0,0,1]::DOUBLE[], 3, 4) AS xy"
    assert run_sql(store, sql)["xy"][0].tolist() == [7.0, 8.0]
    same = "[1,0,0,0,1,0,0,0,1]::DOUBLE[]"
    con = LabelStore(store).connect()  # a store's own connections bring no evaluation code
    with pytest.raises(duckdb.CatalogException, match="true_xy"):
        con.sql(f"SELECT true_xy({same}, {same}, 3, 4)")
    functions.register(con)
    assert con.sql(f"SELECT true_xy({same}, {same}, 3, 4)").fetchone() == ([3.0, 4.0],)
    con.close()
    assert functions.USED.search("SELECT part_truth (a, b)") and not functions.USED.search("SELECT my_true_xy(1)")


def flat_truth(shift: float) -> dict:
    """Part truth (labelgen.truth.PartTruth's fields) of a flat 40 px square seen head-on in a
    100 x 80 view, `shift` px right of the view's centre: a point of it lies in a view of
    shift s at its x plus s - shift."""
    w, h, f = 100, 80, 50.0
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    part = ((abs(x - w / 2 - shift) < 20) & (abs(y - h / 2) < 20)).astype(np.uint8)
    return dict(  # camera = object + (shift / f * depth, 0, depth): pixel x = f * (u + shift / f * 2) / 2 + w / 2
        part=part,
        coord=np.stack([(x - w / 2 - shift) * 2 / f, (y - h / 2) * 2 / f, np.zeros_like(x)], -1).astype(np.float32),
        depth=np.where(part > 0, 2.0, np.inf).astype(np.float32),
        R=np.eye(3),
        t=np.array([shift * 2 / f, 0.0, 2.0]),
        intrinsics=np.array([f, w / 2, h / 2]),
        affine=np.stack([np.full((3, 3), np.nan), np.eye(3)]),
        centre=np.zeros((2, 3)),
        twin=np.zeros(2, dtype=int),
    )


def test_the_pairs_plot_judges_by_part_truth(tmp_path, capsys):
    """A rendered collection's images carry truth_uri, not homographies: the pairs report and
    its plot judge by part truth, as precision does (one label on the true target, one 30 px
    off, one from a point off the object)."""
    for name, shift in (("a", 0.0), ("b", 10.0)):
        Image.new("RGB", (100, 80), (128, 128, 128)).save(tmp_path / f"{name}.png")
        np.savez(tmp_path / f"{name}.npz", **flat_truth(shift))
    store = LabelStore(str(tmp_path / "store"))
    store.begin_run({"run_id": "r", "config_hash": "h", "config": "k: 1"})
    ends = [((40.0, 40.0), (50.0, 40.0)), ((45.0, 45.0), (85.0, 45.0)), ((5.0, 5.0), (15.0, 5.0))]
    rows = [
        dict(run_id="r", category="cat", src_image_id="a", tgt_image_id="b", src_x=sx, src_y=sy, tgt_x=tx, tgt_y=ty,
             hops=1, cycle_error=0.0, similarity=0.8, sphere_angle=None, support=2)
        for (sx, sy), (tx, ty) in ends
    ]  # fmt: skip
    images = pd.DataFrame(
        {
            "run_id": "r",
            "image_id": ["a", "b"],
            "category": "cat",
            "uri": [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
            "width": 100,
            "height": 80,
            "truth_uri": [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")],
        }
    )
    store.files("r").write_category("cat", pa.Table.from_pylist(rows, schema=LABEL_SCHEMA), images_table(images), {})
    store.commit("r", {"labels": 3}, [])
    code, out, err = cli(capsys, "pairs", f"store={store.uri}", "format=json", "plot=" + str(tmp_path / "p.png"))
    assert code == 0, err
    labels = {(r["src_x"], r["src_y"]): r for r in json.loads(out)}
    assert [labels[s]["correct"] for s, _ in ends] == [True, False, False]
    assert {r["truth"] for r in labels.values()} == {"parts"} and labels[(40.0, 40.0)]["error"] < 0.05
    pixels = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).reshape(-1, 3).astype(int)
    r, g, b = pixels.T
    assert ((r < 80) & (g > 200) & (b < 80)).sum() > 20  # lime: the correct label
    assert ((r > 200) & (g < 80) & (b < 80)).sum() > 40  # red: the two wrong ones
    assert not ((r > 200) & (g > 200) & (b < 80)).any()  # no yellow: every label judged
