"""SPair-71k layout: reader, and keypoint PCK with the bounding-box threshold."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from labelgen.backbones import default_conf as backbones_conf
from labelgen.features import FeatureCache, FeatureWorker, worker_batch
from labelgen.geometry import apply_homography
from labelgen.readers.spair import KeypointPair, read_pairs, scan
from trainer.data import FeatureBank
from trainer.evaluate import Matcher, default_conf, keypoint_pck


class Offset:
    """Predicts the true target plus a fixed offset per keypoint (a test double for Matcher)."""

    def __init__(self, pair, offsets):
        self.pair, self.offsets = pair, np.asarray(offsets, dtype=np.float64)

    def predict(self, src, tgt, xy):
        return self.pair.tgt_kps[: len(xy)] + self.offsets[: len(xy)]


def test_pck_per_keypoint_and_per_image_use_the_target_box():
    box = np.array([10.0, 10.0, 110.0, 60.0])  # max side 100 px: thresholds 5 and 10 px
    p1 = KeypointPair("dog", "dog/1", "dog/2", np.zeros((4, 2)) + 1, np.zeros((4, 2)) + 50, box, list("0123"))
    p2 = KeypointPair("dog", "dog/1", "dog/3", np.zeros((2, 2)) + 1, np.zeros((2, 2)) + 50, box, list("01"))
    offsets = {id(p1): [[0, 4], [0, 6], [0, 9], [0, 20]], id(p2): [[3, 0], [30, 0]]}

    class Both:
        def predict(self, src, tgt, xy):
            p = p1 if tgt == "dog/2" else p2
            return Offset(p, offsets[id(p)]).predict(src, tgt, xy)

    t = keypoint_pck(Both(), [p1, p2], [0.05, 0.10]).set_index("category")
    assert t.loc["ALL", "keypoints"] == 6 and t.loc["ALL", "pairs"] == 2
    assert t.loc["ALL", "pck@0.05 per kpt"] == pytest.approx(2 / 6)  # 4 px and 3 px
    assert t.loc["ALL", "pck@0.10 per kpt"] == pytest.approx(4 / 6)  # + 6 and 9 px
    assert t.loc["ALL", "pck@0.05 per img"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert t.loc["ALL", "pck@0.10 per img"] == pytest.approx((3 / 4 + 1 / 2) / 2)


def write_spair(root, demo_manifest):
    """Three demo views of a photo in SPair's layout, keypoints from the true homographies."""
    df = pd.read_parquet(demo_manifest)
    base = os.path.dirname(demo_manifest)
    views = df[df.image_id.str.startswith("chelsea")].iloc[:3]
    photo_pts = np.array([[150.0, 120], [300, 130], [250, 250], [100, 280], [380, 60]])
    kps = {}
    for i, row in enumerate(views.itertuples()):
        name = f"2008_00000{i}"
        for sub in ("JPEGImages/cat", "ImageAnnotation/cat", "PairAnnotation/test"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        Image.open(os.path.join(base, row.uri)).save(os.path.join(root, "JPEGImages/cat", name + ".jpg"), quality=95)
        mask = np.asarray(Image.open(os.path.join(base, row.mask_uri))) > 0
        ys, xs = np.nonzero(mask)
        kps[name] = apply_homography(np.asarray(row.homography).reshape(3, 3), photo_pts)
        ann = {
            "filename": name + ".jpg",
            "category": "cat",
            "azimuth_id": int(round(row.azimuth / 45)) % 8,
            "bndbox": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
            "kps": {str(k): p.tolist() for k, p in enumerate(kps[name])},
        }
        json.dump(ann, open(os.path.join(root, "ImageAnnotation/cat", name + ".json"), "w"))
    names = sorted(kps)
    for n, (a, b) in enumerate([(names[0], names[1]), (names[1], names[2])]):
        bbox = json.load(open(os.path.join(root, "ImageAnnotation/cat", b + ".json")))["bndbox"]
        pair = {
            "src_imname": a + ".jpg",
            "trg_imname": b + ".jpg",
            "category": "cat",
            "src_kps": kps[a].tolist(),
            "trg_kps": kps[b].tolist(),
            "src_bndbox": bbox,
            "trg_bndbox": bbox,
            "kps_ids": list("01234"),
        }
        json.dump(pair, open(os.path.join(root, "PairAnnotation/test", f"{n}-{a}-{b}:cat.json"), "w"))


def test_reader_and_raw_backbone_pck_on_a_fixture(tiny_demo, tmp_path):
    root = str(tmp_path / "SPair-71k")
    write_spair(root, tiny_demo)
    manifest = scan(root)
    assert manifest["image_id"].tolist() == ["cat/2008_000000", "cat/2008_000001", "cat/2008_000002"]
    assert set(manifest["split"]) == {"test"} and manifest["azimuth"].notna().all()
    pairs = read_pairs(root, "test")
    assert [(p.src, p.tgt) for p in pairs] == [
        ("cat/2008_000000", "cat/2008_000001"),
        ("cat/2008_000001", "cat/2008_000002"),
    ]
    assert pairs[0].src_kps.shape == (5, 2)
    with pytest.raises(ValueError, match="is .* an SPair-71k folder"):
        read_pairs(root, "trn")

    backbone = OmegaConf.merge(OmegaConf.create(backbones_conf), {"name": "mobilenetv2"})
    cache = FeatureCache(str(tmp_path / "cache"), "fp")
    worker = FeatureWorker(backbone, 320, cache, threads=2)
    uris = [os.path.join(root, u) for u in manifest["uri"]]
    out = worker(worker_batch(manifest.assign(uri=uris, mask_uri=None)))
    assert (out["error"] == "").all()
    matcher = Matcher(FeatureBank(cache), None, OmegaConf.create(default_conf))
    table = keypoint_pck(matcher, pairs, [0.05, 0.10]).set_index("category")
    # views 15 deg apart: the raw offline backbone finds most keypoints within 10% of the box
    assert table.loc["ALL", "keypoints"] == 10
    assert table.loc["ALL", "pck@0.10 per kpt"] >= 0.8
