"""A collection that grows: a run labels only what is new, a repeated run adds nothing, a
relabel supersedes, and SQL and the trainer count every label once."""

import json
import os

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from labelgen.features import FeatureCache
from labelgen.store import LabelStore
from labelgen.synthetic.collection import build_collection
from trainer.data import default_conf as data_conf
from trainer.data import load_label_data
from trainer.source import resolve_source

pytestmark = pytest.mark.slow


def rows(store, sql):
    con = LabelStore(store).connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def counts(store, run_id):
    return json.loads(rows(store, f"SELECT counts FROM runs WHERE run_id = '{run_id}'")[0][0])


def once_each(store) -> bool:
    """count(*) of `labels` equals its distinct (pair, source point)."""
    return rows(
        store,
        "SELECT count(*) = (SELECT count(*) FROM (SELECT DISTINCT src_image_id, tgt_image_id, src_x, src_y "
        "FROM labels)) FROM labels",
    ) == [(True,)]


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A 3D collection of 2 categories x 3 instances x 8 views, and the same without each
    category's last instance: the collection before it grew."""
    root = tmp_path_factory.mktemp("grow")
    full = build_collection(
        dict(root=str(root), categories=["chair", "figure"], dev_instances=2, val_instances=1, views=8, size=128)
    )
    df = pd.read_parquet(full)
    last = df.groupby("category")["instance"].transform("max")
    small = full.replace("manifest.parquet", "small.parquet")  # beside it: relative URIs stay right
    df[df["instance"] != last].to_parquet(small)
    return small, full, set(df.loc[df["instance"] == last, "image_id"])


def test_a_grown_manifest_labels_only_its_new_views_and_a_repeated_run_adds_nothing(grown, tmp_path, run_on_head):
    small, full, new = grown
    store = str(tmp_path / "store")
    args = ["labelgen.run", f"store={store}", "labels.keep=null"]
    first = run_on_head([*args, f"data.manifest={small}", "run_id=first"])
    assert first.returncode == 0, first.stderr[-3000:]
    c1 = counts(store, "first")
    assert c1["labels"] > 1000 and c1["anchors"] == c1["pairable"] == 32 and c1["coverage"] == 1.0
    assert "coverage  100.0% of the 32 pairable images" in first.stdout

    second = run_on_head([*args, f"data.manifest={full}", "run_id=second"])
    assert second.returncode == 0, second.stderr[-3000:]
    c2 = counts(store, "second")
    assert c2["features_computed"] == len(new) == 16 and c2["features_cached"] == 32
    assert c2["anchors"] == 16 and c2["already_labelled"] == 32 and c2["pairable"] == 48 and c2["known_pairs"] > 0
    assert c2["tuples"] < c1["tuples"]
    # every label of the grown run touches a new view: no old pair is chained again
    marks = ", ".join(f"'{i}'" for i in sorted(new))
    assert rows(
        store,
        f"SELECT count(*) FROM label_history WHERE run_id = 'second' AND src_image_id NOT IN ({marks}) "
        f"AND tgt_image_id NOT IN ({marks})",
    ) == [(0,)]
    assert rows(store, "SELECT run_id, count(*) FROM labels GROUP BY 1 ORDER BY 1") == [
        ("first", c1["labels"]),
        ("second", c2["labels"]),
    ]
    assert c2["coverage"] == 1.0 and once_each(store)

    again = run_on_head([*args, f"data.manifest={full}", "run_id=again"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing new: all 48 pairable images were labelled" in again.stdout
    c3 = counts(store, "again")
    assert (
        c3.get("labels", 0) == 0 and c3.get("tuples", 0) == 0 and c3["features_computed"] == 0 and c3["coverage"] == 1.0
    )
    assert rows(store, "SELECT count(*) FROM labels") == [(c1["labels"] + c2["labels"],)]

    # the reports and the evaluation still find the current labels after a run that labelled nothing
    report = run_on_head(["labelgen.evaluate", f"store={store}", "split=dev", f"output={tmp_path / 'eval.json'}"])
    assert report.returncode == 0, report.stderr[-3000:]
    coverage = run_on_head(["queries", "coverage", f"store={store}", "format=json"])
    assert coverage.returncode == 0, coverage.stderr[-3000:]
    assert {r["category"]: r["pairable"] for r in json.loads(coverage.stdout)} == {"chair": 24, "figure": 24}

    # a relabel (here: every image again) supersedes the labels of each pair it examined
    relabel = run_on_head([*args, f"data.manifest={full}", "run_id=relabel", "new_only=false"])
    assert relabel.returncode == 0, relabel.stderr[-3000:]
    c4 = counts(store, "relabel")
    assert c4["anchors"] == 48 and c4["labels"] > 0
    examined = rows(store, "SELECT count(*) FROM label_pairs WHERE run_id = 'relabel'")[0][0]
    assert rows(store, "SELECT count(*) FROM current_pairs WHERE run_id = 'relabel'") == [(examined,)]
    assert rows(store, "SELECT count(*) FROM labels WHERE run_id = 'relabel'") == [(c4["labels"],)]
    assert rows(store, "SELECT count(*) FROM label_history") == [(c1["labels"] + c2["labels"] + c4["labels"],)]
    assert once_each(store)

    # the trainer reads the current labels: one pair of training data per current image pair
    source = resolve_source(OmegaConf.merge(data_conf, {"store": store}))
    data = load_label_data(source, "none")
    ((pairs, labels),) = rows(store, "SELECT count(DISTINCT (src_image_id, tgt_image_id)), count(*) FROM labels")
    assert len(data.train) == pairs and sum(len(p.src_xy) for p in data.train) == labels

    # an image file replaced under the same id: new features, and no current label of it is made on the old ones
    df = pd.read_parquet(full)
    changed = df.image_id.iloc[0]
    path = os.path.join(os.path.dirname(full), df.uri.iloc[0])
    cache = FeatureCache(os.path.join(store, "features"), counts(store, "first")["backbone"])
    before = cache.load(changed)
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
    replace = run_on_head([*args, f"data.manifest={full}", "run_id=replaced"])
    assert replace.returncode == 0, replace.stderr[-3000:]
    c5 = counts(store, "replaced")
    assert c5["features_computed"] == c5["features_replaced"] == 1 and c5["anchors"] == 1
    assert "1 of them again: their file changed since" in replace.stdout
    after = cache.load(changed)
    assert after.content != before.content and not torch.equal(after.feats, before.feats)
    touching = f"(src_image_id = '{changed}' OR tgt_image_id = '{changed}')"
    assert rows(store, f"SELECT count(*) FROM labels WHERE {touching} AND run_id <> 'replaced'") == [(0,)]
    assert rows(store, f"SELECT count(*) FROM labels WHERE {touching}")[0][0] > 0
    assert rows(
        store,
        f"SELECT count(*) FROM current_pairs WHERE NOT {touching} AND run_id = 'replaced' AND labels = 0 AND runs > 1",
    ) == [(0,)]  # the other pairs keep their labels
    assert once_each(store)
