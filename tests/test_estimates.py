"""Collections as they come: images without masks or poses get them estimated, the run says
so, and they are labelled; a manifest that gives them for some images and not others works."""

import json

import pandas as pd
import pytest

from labelgen.store import LabelStore
from labelgen.synthetic.collection import build_collection

pytestmark = pytest.mark.slow

OBJECTS = {"categories": ["chair", "figure"], "dev_instances": 2, "val_instances": 1, "views": 8, "size": 128}
SMALL = [f"data.objects.{k}={v}".replace("'", "").replace(" ", "") for k, v in OBJECTS.items()]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The small collection SMALL renders (2 categories x 3 instances x 8 views), under `root`."""
    root = tmp_path_factory.mktemp("estimates")
    return root, build_collection({**OBJECTS, "root": str(root / "data")})


def rows(store, sql):
    con = LabelStore(str(store)).connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_folder_without_poses_or_masks_gets_both_estimated_and_labelled(collection, tmp_path, run_on_head):
    root, manifest = collection
    df = pd.read_parquet(manifest)
    bare = manifest.replace("manifest.parquet", "bare.parquet")  # beside the collection: relative URIs stay right
    val = df[df["split"] == "val"]
    val.drop(columns=["azimuth", "elevation", "theta", "mask_uri"]).to_parquet(bare)
    store = tmp_path / "store"
    # the viewpoint head learns from the built-in collection's dev split (here the small one above, whose val
    # split is the manifest: other instances)
    done = run_on_head(
        ["labelgen.run", f"data.manifest={bare}", f"store={store}", f"data.objects.root={root / 'data'}", *SMALL]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "masks     0 given, 16 estimated (foreground: saliency-vits" in out, out
    assert "pose      0 given, 16 estimated" in out or "pose      0 given, " in out, out
    assert "trained on 32 views of the built-in collection's dev split" in out, out
    images = rows(store, "SELECT pose_source, mask_source, azimuth IS NOT NULL, pose_confidence FROM images")
    assert {r[0] for r in images} == {"estimated: head"} and all(r[1].startswith("saliency-vits") for r in images)
    assert sum(r[2] for r in images) >= 12  # most estimates confident enough to pair by pose
    assert rows(store, "SELECT count(*) FROM labels")[0][0] > 500
    counts = json.loads(rows(store, "SELECT counts FROM runs")[0][0])
    assert counts["pose"]["estimator"].startswith("viewpoint head") and set(counts["paired_by"]) == {"chair", "figure"}
    assert counts["foreground"]["by_category"] == {
        "chair": {"given": 0, "estimated": 8},
        "figure": {"given": 0, "estimated": 8},
    }
    coverage = run_on_head(["queries", "coverage", f"store={store}", "format=json"])
    assert coverage.returncode == 0, coverage.stderr[-3000:]
    report = {r["category"]: r for r in json.loads(coverage.stdout)}
    assert report["chair"]["masks_estimated"] == 8 and report["chair"]["pose_given"] == 0


def test_a_mixed_manifest_keeps_what_it_gives_and_estimates_the_rest(collection, tmp_path, run_on_head):
    root, manifest = collection
    df = pd.read_parquet(manifest)
    mixed = manifest.replace("manifest.parquet", "mixed.parquet")
    val = df["split"] == "val"
    df.loc[val, ["azimuth", "elevation", "theta"]] = float("nan")
    df.loc[val, "mask_uri"] = None
    df.to_parquet(mixed)
    store = tmp_path / "store"
    done = run_on_head(
        ["labelgen.run", f"data.manifest={mixed}", f"store={store}", "pose.min_posed=16", "pose.min_confidence=0"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "masks     32 given, 16 estimated" in done.stdout and "pose      32 given, 16 estimated, 0 none" in done.stdout
    )
    assert "trained on 32 posed images of the manifest" in done.stdout, done.stdout
    images = dict(rows(store, "SELECT image_id, pose_source FROM images"))
    assert {images[i] for i in df.loc[val, "image_id"]} == {"estimated: head"}
    assert {images[i] for i in df.loc[~val, "image_id"]} == {"given"}
    # estimated poses pair like given ones: labels between a given and an estimated view
    given, estimated = df.loc[~val, "image_id"].tolist(), df.loc[val, "image_id"].tolist()
    mixed_pairs = rows(
        store,
        f"SELECT count(*) FROM labels WHERE src_image_id IN {tuple(estimated)} AND tgt_image_id IN {tuple(given)}",
    )[0][0]
    assert mixed_pairs > 0
