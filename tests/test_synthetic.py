"""The rendered 3D collection's truth: known cameras give known correspondences, twins map to
each other under mirroring, hidden points are reported hidden."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelgen.geometry import rotation
from labelgen.synthetic.categories import CATEGORIES, part_names, twin
from labelgen.synthetic.collection import build_collection, read_keypoints, textures, truth_arrays
from labelgen.synthetic.render import Renderer, project
from labelgen.synthetic.shapes import MIRROR, PRIMITIVES
from labelgen.truth import PartTruth, judge, true_targets
from trainer.evaluate import collection_keypoint_pairs, keypoint_pck  # torch's triton before Mesa: see build_collection

SIZE = 160


@pytest.fixture(scope="module")
def scene():
    """A chair (mirror-symmetric: every part is central or one of a twin pair), a renderer,
    and a function that renders it from (azimuth, elevation, theta)."""
    renderer = Renderer(SIZE)
    rng = np.random.default_rng(3)
    parts = CATEGORIES["chair"](rng)
    names = part_names("chair")
    ids = {n: i + 1 for i, n in enumerate(names)}
    texs = [renderer.texture(t) for t in textures(rng, {"grey": Image.new("RGB", (64, 64), 128)})]
    centre = np.array([0.0, -0.55, 0.0])
    focal, principal = 1.2 * SIZE, (SIZE / 2, SIZE / 2)

    def view(azimuth, elevation, theta):
        R = rotation(azimuth, elevation, theta)
        t = np.array([0.0, 0.0, 3.0]) - R @ centre
        _, part, coord, depth = renderer.render(
            parts, [ids[p.name] for p in parts], texs, R, t, focal, principal, np.array([0.0, -1.0, -1.0])
        )
        return {
            "truth": PartTruth(**truth_arrays(part, coord, depth, parts, ids, R, t, focal, principal)),
            "depth": depth,
            "R": R,
            "t": t,
        }

    yield parts, names, view, focal, principal
    renderer.release()


def test_twin_parts_are_mirror_images_with_the_same_canonical_coordinates():
    parts = {p.name: p for p in CATEGORIES["quadruped"](np.random.default_rng(0))}
    unit = PRIMITIVES["cylinder"].pos
    assert np.allclose(parts["leg_front_r"].place(unit), parts["leg_front_l"].place(unit) @ MIRROR.T)
    assert twin("leg_front_l") == "leg_front_r" and twin("ear_r") == "ear_l" and twin("torso") is None


def test_a_known_camera_pair_gives_the_known_correspondence(scene):
    _, _, view, focal, principal = scene
    a, b = view(20.0, 25.0, 5.0), view(65.0, 15.0, -5.0)
    ta, tb = a["truth"], b["truth"]
    rows, cols = np.nonzero(ta.part)
    xy = np.stack([cols, rows], 1) + 0.5
    truth_xy, visible, _ = true_targets(ta, tb, xy)
    # another way to the same answer: back-project each pixel of A with A's depth (no canonical
    # coordinates), move it into B's camera with the known cameras, depth-test it there
    z = a["depth"][rows, cols]
    cam_a = np.stack([(xy[:, 0] - principal[0]) / focal * z, (xy[:, 1] - principal[1]) / focal * z, z], 1)
    proj = project((cam_a - a["t"]) @ a["R"], b["R"], b["t"], focal, principal)
    col, row = np.floor(proj[:, 0]).astype(int), np.floor(proj[:, 1]).astype(int)
    inside = (col >= 0) & (col < SIZE) & (row >= 0) & (row < SIZE)
    seen = np.zeros(len(xy), bool)
    hit = b["depth"][row[inside], col[inside]]
    seen[inside] = np.isfinite(hit) & (proj[inside, 2] <= hit * 1.01)  # on the object, and nothing in front
    assert (visible == seen).mean() > 0.99
    both = visible & seen
    err = np.linalg.norm(truth_xy[both] - proj[both, :2], axis=1)
    assert both.sum() > 500 and np.max(err) < 0.05


def test_a_mirrored_camera_sees_each_twin_where_the_other_was(scene):
    _, names, view, _, _ = scene
    a, b = view(35.0, 20.0, 8.0), view(-35.0, 20.0, -8.0)  # the mirror image of view a
    pa, pb = a["truth"].part, b["truth"].part[:, ::-1]
    ids = {n: i + 1 for i, n in enumerate(names)}
    twin_id = np.arange(len(names) + 1)
    for n in names:
        if twin(n) in ids:
            twin_id[ids[n]] = ids[twin(n)]
    on = (pa > 0) | (pb > 0)
    assert (twin_id[pa][on] == pb[on]).mean() > 0.97
    twins = np.isin(pa, [ids[n] for n in names if twin(n)]) & (twin_id[pa] == pb)
    close = np.linalg.norm(a["truth"].coord[twins] - b["truth"].coord[:, ::-1][twins], axis=1) < 0.1
    assert twins.sum() > 200 and close.mean() > 0.95
    # a label that lands on the twin part is a mirror error; on the part itself it is not
    rows, cols = np.nonzero(np.isin(pa, [ids["leg_front_l"], ids["leg_back_l"]]))
    src = np.stack([cols, rows], 1) + 0.5
    mirrored_tgt = np.stack([SIZE - src[:, 0], src[:, 1]], 1)  # where the twin is in view b
    verdict = judge(a["truth"], b["truth"], src, mirrored_tgt)
    assert verdict["twin_part"].all() and verdict["mirrored"].mean() > 0.9 and not verdict["correct"][:, 1].any()


def test_a_point_facing_away_from_the_target_camera_is_hidden(scene):
    _, names, view, _, _ = scene
    front, back = view(0.0, 20.0, 0.0), view(180.0, 20.0, 0.0)
    tf = front["truth"]
    facing = (tf.part == names.index("back") + 1) & (tf.coord[..., 2] < -0.95)  # the chair back's front face
    rows, cols = np.nonzero(facing)
    _, visible, _ = true_targets(tf, back["truth"], np.stack([cols, rows], 1) + 0.5)
    assert len(rows) > 100 and (~visible).mean() > 0.95
    verdict = judge(tf, back["truth"], np.stack([cols, rows], 1) + 0.5, np.full((len(rows), 2), SIZE / 2))
    assert verdict["hidden"].mean() > 0.95 and not verdict["correct"][verdict["hidden"]].any()


def test_the_precision_report_judges_stored_labels_against_part_truth(scene, tmp_path, capsys):
    """Labels on the true targets, from hidden points and onto twins, through the store's
    catalog and the `precision` report."""
    import json

    import pyarrow as pa

    from labelgen.labels import LABEL_SCHEMA
    from labelgen.store import LabelStore, images_table
    from queries.__main__ import main

    _, names, view, _, _ = scene
    views = {
        "a": view(20.0, 25.0, 5.0),
        "b": view(65.0, 15.0, -5.0),
        "c": view(35.0, 20.0, 8.0),
        "d": view(-35.0, 20.0, -8.0),
    }
    for name, v in views.items():
        np.savez(tmp_path / f"{name}.npz", **vars(v["truth"]))
    ta, tb = views["a"]["truth"], views["b"]["truth"]
    rows, cols = np.nonzero(ta.part)
    xy = np.stack([cols, rows], 1) + 0.5
    truth_xy, visible, _ = true_targets(ta, tb, xy)
    hidden = ~visible
    # pair a -> b, one hop: 8 labels on their true targets, 2 from points hidden in b
    src = np.concatenate([xy[visible][:8], xy[hidden][:2]])
    tgt = np.concatenate([truth_xy[visible][:8], np.full((2, 2), SIZE / 2)])
    labels = [(("a", "b"), 1, s, t) for s, t in zip(src, tgt)]
    # pair c -> d (its mirror image), two hops: 4 labels from the left front leg onto the right one
    tc = views["c"]["truth"]
    rows, cols = np.nonzero(tc.part == names.index("leg_front_l") + 1)
    src = (np.stack([cols, rows], 1) + 0.5)[::5][:4]
    labels += [(("c", "d"), 2, s, np.array([SIZE - s[0], s[1]])) for s in src]
    store = LabelStore(str(tmp_path / "store"))
    store.begin_run({"run_id": "r", "config_hash": "h", "config": "k: 1"})
    table = pa.Table.from_pylist(
        [
            dict(
                run_id="r",
                category="chair",
                src_image_id=a,
                tgt_image_id=b,
                src_x=s[0],
                src_y=s[1],
                tgt_x=t[0],
                tgt_y=t[1],
                hops=h,
                cycle_error=0.0,
                similarity=0.9,
                sphere_angle=None,
                support=1,
            )
            for (a, b), h, s, t in labels
        ],
        schema=LABEL_SCHEMA,
    )
    images = pd.DataFrame(
        {
            "run_id": "r",
            "image_id": list(views),
            "category": "chair",
            "uri": "unused.png",
            "split": "val",
            "width": SIZE,
            "height": SIZE,
            "n_fg": 1,
            "truth_uri": [str(tmp_path / f"{n}.npz") for n in views],
        }
    )
    store.files("r").write_category("chair", table, images_table(images), {})
    store.commit("r", {"labels": len(labels)}, [])
    assert main(["precision", f"store={store.uri}", "format=json"]) == 0
    report = {r["hops"]: r for r in json.loads(capsys.readouterr().out)}
    assert report[1]["truth"] == "parts" and report[1]["split"] == "val" and report[1]["labels"] == 10
    assert report[1]["p_05"] == report[1]["p_10"] == 0.8 and report[1]["hidden"] == 0.2
    assert report[1]["median_error"] < 0.01
    assert report[2]["labels"] == 4 and report[2]["p_10"] == 0.0 and report[2]["mirror"] == 1.0


def test_a_collection_has_disjoint_dev_and_val_instances_with_full_truth(tmp_path):
    conf = dict(root=str(tmp_path), categories=["bird", "lamp"], dev_instances=2, val_instances=1, views=3, size=96)
    manifest = build_collection(conf)
    df = pd.read_parquet(manifest)
    assert len(df) == 2 * 3 * 3 and set(df.split) == {"dev", "val"}
    assert not set(df[df.split == "dev"].instance) & set(df[df.split == "val"].instance)
    assert {"azimuth", "elevation", "theta", "mask_uri", "truth_uri", "instance"} <= set(df.columns)
    assert np.ptp(df.azimuth) > 200 and df.theta.abs().max() <= 10
    kps = pd.read_parquet(manifest.replace("manifest.parquet", "keypoints.parquet"))
    assert set(kps.image_id) == set(df.image_id) and 0.2 < kps.visible.mean() < 1.0
    assert {"wing_tip_l", "wing_tip_r", "shade_top_l", "shade_top_r"} <= set(kps.name)
    # each keypoint names its left/right twin; a file written before that column gets it from the names
    assert kps.twin.fillna("-").tolist() == [twin(n) or "-" for n in kps.name] and kps.twin.notna().any()
    kps.drop(columns="twin").to_parquet(tmp_path / "old.parquet")
    assert read_keypoints(str(tmp_path / "old.parquet")).twin.fillna("-").tolist() == kps.twin.fillna("-").tolist()
    assert build_collection(conf) == manifest  # rendered once


def test_keypoint_pairs_of_held_out_instances_and_the_geometry_aware_subset(tmp_path):
    from types import SimpleNamespace

    manifest = build_collection(
        dict(root=str(tmp_path), categories=["bird", "figure"], dev_instances=1, val_instances=2, views=3, size=96)
    )
    df = pd.read_parquet(manifest).set_index("image_id")
    kps = pd.read_parquet(manifest.replace("manifest.parquet", "keypoints.parquet")).set_index(["image_id", "name"])
    data = SimpleNamespace(manifests=[manifest], val_split="val", images=df)
    pairs = collection_keypoint_pairs(data, per_category=20)
    assert len(pairs) == 2 * 9 * 2  # per category: 6 val views, 2 instances: 2 x 3 x 3 ordered pairs
    for p in pairs:
        assert (
            df.at[p.src, "split"] == df.at[p.tgt, "split"] == "val"
            and df.at[p.src, "instance"] != df.at[p.tgt, "instance"]
        )
        for k, name in enumerate(p.kps_ids):
            both = kps.at[(p.src, name), "visible"] and kps.at[(p.tgt, name), "visible"]
            assert np.isfinite(p.src_kps[k]).all() == both == np.isfinite(p.tgt_kps[k]).all()
            other = twin(name)
            assert p.geo[k] == (both and other is not None and bool(kps.at[(p.tgt, other), "visible"]))
    assert any(p.geo.any() for p in pairs)

    class Oracle:  # predicts the true target keypoint, or its twin's position (a mirror error)
        def __init__(self, mirror):
            self.mirror = mirror

        def predict(self, src, tgt, xy):
            p = next(q for q in pairs if q.src == src and q.tgt == tgt)
            k = np.nonzero(np.isfinite(p.src_kps).all(1))[0]
            names = [twin(p.kps_ids[i]) if self.mirror and twin(p.kps_ids[i]) else p.kps_ids[i] for i in k]
            return np.stack([[kps.at[(tgt, n), "x"], kps.at[(tgt, n), "y"]] for n in names])

    exact = keypoint_pck(Oracle(False), pairs, [0.1]).set_index("category")
    mirrored = keypoint_pck(Oracle(True), pairs, [0.1]).set_index("category")
    assert exact.at["ALL", "pck@0.10 per kpt"] == 1.0 and exact.at["ALL", "geo pck@0.10 per kpt"] == 1.0
    assert (
        mirrored.at["ALL", "geo pck@0.10 per kpt"] < mirrored.at["ALL", "pck@0.10 per kpt"] < 1.0
    )  # twins are where it fails
