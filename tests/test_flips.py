"""Mirrored features: cached by the feature worker, used by pose alignment."""

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from PIL import Image

from labelgen.backbones import default_conf as backbones_conf
from labelgen.features import FLIPPED, FeatureCache, FeatureWorker, worker_batch
from trainer.data import FeatureBank
from trainer.evaluate import Matcher, default_conf


def test_worker_caches_the_mirrored_twin_and_pose_alignment_uses_it(tiny_demo, tmp_path):
    manifest = pd.read_parquet(tiny_demo)
    row = manifest[manifest.image_id.str.startswith("chelsea")].iloc[0]
    root = tiny_demo.rsplit("/", 1)[0]
    src = f"{root}/{row.uri}"
    mirror = tmp_path / "mirror.png"
    Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror)
    backbone_conf = OmegaConf.merge(OmegaConf.create(backbones_conf), {"name": "mobilenetv2"})
    batch = worker_batch(pd.DataFrame({"image_id": ["a", "b"], "uri": [src, str(mirror)], "mask_uri": [None, None]}))
    cache, parted = FeatureCache(str(tmp_path / "cache"), "fp"), FeatureCache(str(tmp_path / "parts"), "fp")
    worker = FeatureWorker(backbone_conf, 320, cache, threads=2, flips=True, foreground={"method": "image"})
    out = worker(batch)
    assert out["error"].tolist() == ["", ""]
    parts = FeatureWorker(
        backbone_conf,
        320,
        parted,
        threads=2,
        flips=True,
        foreground={"method": "image"},
        micro_batch=3,
    )  # forwards of 3 and 1 views, as a GPU actor splits its batches
    assert parts(batch)["error"].tolist() == ["", ""]
    for i in ("a", "a" + FLIPPED, "b", "b" + FLIPPED):
        whole, split = cache.load(i), parted.load(i)
        assert torch.equal(whole.stored, split.stored) and torch.allclose(
            whole.feats.float(), split.feats.float(), atol=1e-2
        )
    a, a_flip = cache.load("a"), cache.load("a" + FLIPPED)
    assert torch.equal(a_flip.fg, a.fg.flip(1))  # 320 x 320: the mirror is cell for cell
    b = cache.load("b")
    # the mirrored twin is the mirrored image's features
    assert torch.equal(a_flip.stored, b.stored) and torch.allclose(a_flip.feats.float(), b.feats.float(), atol=1e-2)

    bank = FeatureBank(cache)
    conf = OmegaConf.merge(default_conf, {"flip_align": True})
    matcher = Matcher(bank, None, conf)
    assert matcher.instance_distance("a" + FLIPPED, "b") < 1e-3 < matcher.instance_distance("a", "b")
    pts = np.array([[100.0, 120.0], [200.0, 150.0], [160.0, 100.0]], dtype=np.float32)
    truth = np.stack([320 - pts[:, 0], pts[:, 1]], axis=1)  # where a's points are in the mirror b
    aligned = matcher.predict("a", "b", pts)
    assert np.abs(aligned - truth).max() < 8  # within a patch
    assert bank.view("a", pts, flip=True)[1][:, 0].tolist() == (320 - pts[:, 0]).tolist()
