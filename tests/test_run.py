"""End to end on local Ray: the user's commands, run as the user runs them."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from labelgen.labels import LABEL_SCHEMA
from labelgen.node_copy import COPIES
from labelgen.store import LabelStore
from tests.support.tiny import tiny_demo_args

pytestmark = pytest.mark.slow


def test_pipeline_writes_queryable_labels_and_reuses_the_feature_cache(tiny_demo, tmp_path, run, run_on_head):
    store = tmp_path / "store"
    first = run(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store}"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert "committed" in first.stdout and "after the vote" in first.stdout
    stages = re.search(r"time +(.*)", first.stdout).group(1)
    assert [part.rsplit(" ", 2)[0] for part in stages.split(", ")] == [
        "collection",
        "backbone",
        "ray start",
        "features",
        "poses",
        "tuples",
        "chains",
        "vote",
        "commit",
        "total",
    ], stages
    con = LabelStore(str(store)).connect()
    assert [c[0] for c in con.execute("DESCRIBE labels").fetchall()] == LABEL_SCHEMA.names
    n, cats, pairs, max_hops = con.execute(
        "SELECT count(*), count(DISTINCT category), count(DISTINCT (src_image_id, tgt_image_id)), max(hops) FROM labels"
    ).fetchone()
    # 2 categories x 2 tuples (both sweep directions) x 12 ordered pairs
    assert cats == 2 and pairs == 24 and max_hops == 3 and n > 1000
    assert con.execute(
        "SELECT count(*) FROM labels WHERE src_x < 0 OR src_x > 320 OR tgt_y < 0 OR tgt_y > 320"
    ).fetchone() == (0,)
    counts = json.loads(con.execute("SELECT counts FROM runs").fetchone()[0])
    assert counts["features_computed"] == 8 and counts["labels"] == n
    con.close()

    # the store moved (its feature cache with it), then the vote in one partition per tuple (2 per
    # category) instead of one per category
    shutil.move(store, tmp_path / "moved")
    store = tmp_path / "moved"
    second = run_on_head(  # its own local instance was the first run's
        ["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store}", "run_id=again", "labels.vote_tuples=1"]
    )
    assert second.returncode == 0, second.stderr[-3000:]
    con = LabelStore(str(store)).connect()
    counts = json.loads(con.execute("SELECT counts FROM runs WHERE run_id = 'again'").fetchone()[0])
    assert counts["features_cached"] == 8 and counts["features_computed"] == 0
    # same features, the vote partitioned: the same labels
    for a, b in (("=", "<>"), ("<>", "=")):
        diff = con.execute(
            f"SELECT count(*) FROM (SELECT * EXCLUDE run_id FROM label_history WHERE run_id {a} 'again' "
            f"EXCEPT ALL SELECT * EXCLUDE run_id FROM label_history WHERE run_id {b} 'again')"
        ).fetchone()
        assert diff == (0,)
    con.close()
    assert len(list((store / "runs" / "again" / "labels").glob("category=*/part-*.parquet"))) == 4
    assert not glob.glob(os.path.join(COPIES, "again-*"))  # the chains' copies of features go with the run
    # the run's config written out and given back: the same config hash, so the run is found done
    saved = run(["labelgen.store", "config", "again", f"store={store}"])
    (tmp_path / "again.yaml").write_text(saved.stdout)
    replay = run(["labelgen.run", f"config={tmp_path / 'again.yaml'}"])
    assert replay.returncode == 0 and "run again is already committed" in replay.stdout, replay.stderr[-3000:]

    report = run(["labelgen.evaluate", f"store={store}", "run_id=again", f"output={tmp_path / 'eval.json'}"])
    assert report.returncode == 0, report.stderr[-3000:]
    rows = {r["kind"]: r for r in json.load(open(tmp_path / "eval.json"))["rows"] if r["category"] == "ALL"}
    # the demo's 30-deg hops are easy: labels are precise at 5% of the image side
    assert rows["chained hops=1"]["P@0.05"] > 0.9
    assert rows["far: chained"]["P@0.10"] > 0.9
    assert rows["direct raw hops=3"]["P@0.05"] < rows["direct cycle hops=3"]["P@0.05"]

    query = run(["queries", "labels_per_category", f"store={store}", "format=csv"])
    assert (
        query.returncode == 0 and query.stdout.count("\n") == 3
    )  # header + 2 categories: "again" relabelled every pair


def test_categories_with_narrow_poses_get_shorter_tuples_and_a_run_without_labels_says_why(
    tiny_demo, tmp_path, run_on_head
):
    import pandas as pd

    df = pd.read_parquet(tiny_demo)
    narrow = df[(df.category == "chelsea") & (df.azimuth < 30) | (df.category == "motorcycle") & (df.azimuth == 15)]
    manifest = os.path.join(os.path.dirname(tiny_demo), "manifest-narrow.parquet")  # next to the images it names
    narrow.to_parquet(manifest)
    store = tmp_path / "store"
    out = run_on_head(["labelgen.run", *tiny_demo_args(manifest), f"store={store}", "run_id=narrow"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "chelsea: K=3 (its poses allow no longer)" in out.stdout
    assert "no tuple for 'motorcycle': its 1 images make no pair one hop apart" in out.stdout
    con = LabelStore(str(store)).connect()
    assert con.execute("SELECT DISTINCT category, max(hops) FROM labels GROUP BY 1").fetchall() == [("chelsea", 2)]
    counts = json.loads(con.execute("SELECT counts FROM runs").fetchone()[0])
    assert counts["tuple_k"] == {"chelsea": 3} and set(counts["no_tuples"]) == {"motorcycle"}
    con.close()

    lone = os.path.join(os.path.dirname(tiny_demo), "manifest-lone.parquet")
    df[df.category == "motorcycle"].iloc[:1].to_parquet(lone)
    empty = run_on_head(["labelgen.run", *tiny_demo_args(lone), f"store={store}", "run_id=lone"])
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert "warning: run lone stored 0 labels: 'motorcycle': its 1 images make no pair" in empty.stdout + empty.stderr


@pytest.mark.skipif(
    os.environ.get("LABELGEN_SSH_TESTS") == "1",
    reason="test_cluster's ray up test submits the same job to a head started over ssh",
)
def test_ray_job_submit_against_a_local_head(tiny_demo, tmp_path, ray_head):
    """`ray start --head` on loopback (the session's), then `ray job submit -- python -m labelgen.run`.

    Ray turns token authentication on for local clusters; the client opts in with
    RAY_AUTH_MODE=token and finds the head's token in ~/.ray/auth_token.
    """
    bin_dir = os.path.dirname(sys.executable)
    store = tmp_path / "store"
    job = subprocess.run(
        [
            os.path.join(bin_dir, "ray"),
            "job",
            "submit",
            f"--address={ray_head.dashboard}",
            "--",
            "python",
            "-m",
            "labelgen.run",
            *tiny_demo_args(tiny_demo),
            f"store={store}",
            "run_id=from-job",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ""},
    )
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "cluster at" in job.stdout and "succeeded" in job.stdout + job.stderr
    con = LabelStore(str(store)).connect()
    assert con.execute("SELECT status FROM runs WHERE run_id = 'from-job'").fetchone() == ("committed",)
    assert con.execute("SELECT count(*) FROM labels").fetchone()[0] > 1000
    con.close()


def test_a_run_on_a_postgresql_catalog_is_found_again_by_every_reader(tiny_demo, tmp_path, postgres, run):
    store, catalog = tmp_path / "store", postgres("pipeline")
    out = run(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store}", f"catalog={catalog}", "run_id=pg"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (store / "catalog.sqlite").exists()
    # later commands name only the store: its catalog.json says where the catalog is
    query = run(
        [
            "queries",
            "sql",
            "SELECT status, counts->>'labels' AS n, (SELECT count(*) FROM labels) AS rows FROM runs",
            f"store={store}",
            "format=json",
        ]
    )
    assert query.returncode == 0, query.stderr[-3000:]
    (row,) = json.loads(query.stdout)
    assert row["status"] == "committed" and int(row["n"]) == row["rows"] > 1000
    wrong = run(["queries", "runs", f"store={store}", f"catalog=sqlite:{tmp_path / 'other.sqlite'}"])
    assert wrong.returncode == 2 and "was created with catalog=postgres:" in wrong.stderr
