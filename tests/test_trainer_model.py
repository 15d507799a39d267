import math

import pytest
import torch
import torch.nn.functional as F

from labelgen.io import write_bytes
from labelgen.models import Adapter, checkpoint_bytes, load_checkpoint
from trainer.losses import clip_loss, dense_loss, sample, soft_argmax, window_soft_argmax


def test_adapter_size_shape_and_round_trip(tmp_path):
    adapter = Adapter([768])
    n = sum(p.numel() for p in adapter.parameters())
    assert 0.55e6 < n < 0.7e6  # the published DINO-only adapter: about 0.63M
    mixed = Adapter([32, 96, 160], out_dim=288).eval()
    x = F.normalize(torch.randn(2, 288, 10, 12), dim=1)
    y = mixed(x)
    assert y.shape == (2, 288, 10, 12)
    assert torch.allclose(y.norm(dim=1), torch.ones(2, 10, 12), atol=1e-5)
    assert mixed.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    write_bytes(str(tmp_path / "a.pt"), checkpoint_bytes(mixed, step=3))
    again = load_checkpoint(Adapter, str(tmp_path / "a.pt"))
    assert torch.equal(again(x), y)


def one_hot_grid(h=6, w=8):
    """Features that are one-hot per cell: a perfect matcher between identical grids."""
    return torch.eye(h * w).T.reshape(h * w, h, w)


def test_perfect_features_give_near_zero_losses():
    feats = one_hot_grid()
    xy = torch.tensor([[0.0, 0.0], [3.0, 2.0], [7.0, 5.0], [5.0, 1.0]])
    src, tgt = sample(feats, xy), sample(feats, xy)
    assert torch.allclose(src @ tgt.T, torch.eye(4), atol=1e-6)
    assert clip_loss(src, tgt, torch.tensor(math.log(100.0))).item() < 1e-6
    assert dense_loss(src, feats, xy, temperature=0.02).item() < 1e-6
    # shuffled targets are wrong: both losses grow
    wrong = xy[[1, 2, 3, 0]]
    assert clip_loss(src, sample(feats, wrong), torch.tensor(math.log(100.0))).item() > 10
    assert dense_loss(src, feats, wrong).item() > 2


def test_soft_argmax_and_window_find_a_known_peak():
    h, w = 9, 11
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # smooth bump around (col 6.3, row 2.0): the expected position sits between cells
    feats = torch.stack([torch.exp(-((xs - 6.3) ** 2 + (ys - 2.0) ** 2) / 2.0), torch.zeros(h, w)]).float()
    query = torch.tensor([[1.0, 0.0]])
    pos = window_soft_argmax(query, feats, window=2, temperature=0.1)
    assert pos[0].tolist() == pytest.approx([6.3, 2.0], abs=0.15)
    # a second, distant bump pulls the global soft-argmax but not the window
    feats[0] += torch.exp(-((xs - 0.0) ** 2 + (ys - 8.0) ** 2) / 2.0) * 0.9
    assert window_soft_argmax(query, feats, window=2, temperature=0.1)[0, 0] > 6.0
    assert soft_argmax(query, feats, temperature=0.1)[0, 0] < 5.0


def test_truth_pairs_take_the_labels_pose_gap_which_is_the_azimuth_gap_at_elevation_0():
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from trainer.evaluate import truth_pairs

    azimuths = [-45.0, -15.0, 15.0, 45.0, 170.0, -170.0]
    images = pd.DataFrame(
        {
            "category": "cat",
            "split": ["val"] * 5 + ["train"],
            "azimuth": azimuths,
            "homography": [np.eye(3).flatten()] * 4 + [None] * 2,
        },
        index=pd.Index([f"v{k}" for k in range(6)], name="image_id"),
    )
    pairs = truth_pairs(SimpleNamespace(images=images, val_split="val"))
    assert len(pairs) == 4 * 3  # held-out views with truth only
    az = dict(zip(images.index, azimuths))
    for a, b, gap in pairs:
        assert gap == pytest.approx(abs((az[a] - az[b] + 540) % 360 - 180), abs=1e-4)
    assert sorted({round(g) for _, _, g in pairs}) == [30, 60, 90] and min(g for *_, g in pairs if round(g) == 60) >= 60
