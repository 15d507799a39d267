"""The viewpoint head: layouts, targets, training and prediction on known poses; the pose step's
bookkeeping (what is given, estimated, too unsure)."""

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from labelgen.features import ImageFeatures
from labelgen.viewpoint import head as H
from labelgen.viewpoint import unposed, with_sources


def test_wrapped_targets_peak_at_the_azimuth_s_bin_and_wrap_around():
    t = H.wrapped_targets(torch.tensor([5.0, 355.0, -5.0, 185.0]), bins=36, sigma=1.0)
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert t.argmax(1).tolist() == [0, 35, 35, 18]
    assert t[0, 35] > 0.2 and t[1, 0] > 0.2  # neighbours across 0/360 share the mass


def test_layout_pools_the_foreground_box_into_cells_with_their_share():
    fg = torch.zeros(10, 10, dtype=torch.bool)
    fg[2:6, 4:8] = True  # a 4 x 4 box
    fg[2, 4] = False  # one cell of the top-left bin missing
    grid = torch.zeros(10, 10, 3)
    grid[..., 0] = 1.0
    grid[2:4, 6:8] = torch.tensor([0.0, 1.0, 0.0])  # the top-right quarter points elsewhere
    out = H.layout(ImageFeatures(grid, fg, 1.0, 8, 80, 80), cells=2)
    assert out.shape == (4, 4)
    feats, share = out[:, :3], out[:, 3]
    assert torch.allclose(share, torch.tensor([0.75, 1.0, 1.0, 1.0]))
    assert torch.allclose(feats, torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [1.0, 0, 0]]))
    assert H.layout(ImageFeatures(grid, torch.zeros(10, 10, dtype=torch.bool), 1.0, 8, 80, 80), 2) is None


def synthetic_views(azimuths: np.ndarray, rng) -> torch.Tensor:
    """Layouts whose features turn with the azimuth, column by column, plus noise: a pose the
    head can read, as a known rotation gives known matches."""
    a = np.deg2rad(azimuths)[:, None, None]
    cols = np.arange(4)[None, None, :] * 0.4
    rows = np.arange(4)[None, :, None] * 0.2
    x = np.stack([np.cos(a + cols + rows), np.sin(a + cols + rows), np.cos(2 * a + cols + 0 * rows)], -1)
    x = x + rng.normal(0, 0.05, x.shape)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    share = np.ones(x.shape[:-1] + (1,))
    return torch.from_numpy(np.concatenate([x, share], -1).reshape(len(azimuths), 16, 4)).float()


def test_a_head_trained_on_known_poses_reads_held_out_ones():
    rng = np.random.default_rng(0)
    train = rng.uniform(-180, 180, 300)
    poses = np.stack([train, rng.uniform(0, 40, 300), rng.uniform(-10, 10, 300)], 1)
    views = synthetic_views(train, rng)
    conf = OmegaConf.merge(H.default_conf, {"steps": 300, "dropout": 0.0})
    head = H.train_head(list(views), poses, conf)
    test = np.array([-170.0, -95.0, -20.0, 0.0, 44.0, 133.0, 178.0])
    pred = H.predict(head, synthetic_views(test, rng), synthetic_views(-test, rng))
    error = np.abs((pred["azimuth"] - test + 180) % 360 - 180)
    assert error.max() < 12.0, error
    assert (pred["confidence"] > 0.5).all() and (pred["spread"] < 30).all()
    alone = H.predict(head, synthetic_views(test, rng))  # without mirrors: the image's own distribution
    assert np.abs((alone["azimuth"] - test + 180) % 360 - 180).max() < 15.0


def test_the_mirror_s_distribution_is_reflected_before_it_is_multiplied():
    head = H.ViewpointHead(dim=3, cells=1, bins=4, width=2, hidden=2, dropout=0.0)
    logits = {"view": torch.tensor([[0.0, 9.0, 0.0, 0.0]]), "mirror": torch.tensor([[0.0, 0.0, 9.0, 0.0]])}
    head.forward = lambda x: (logits["view" if x[0, 0, 0] > 0 else "mirror"], torch.zeros(1), torch.zeros(1))
    view, mirror = torch.ones(1, 1, 4), -torch.ones(1, 1, 4)
    pred = H.predict(head, view, mirror)  # bin 1 (90..180) and the mirror's bin 2 (-180..-90 reflected): agree
    assert pred["azimuth"][0] == pytest.approx(135.0, abs=1.0) and pred["confidence"][0] > 0.99


def test_rows_without_an_azimuth_are_estimated_and_given_ones_say_so():
    df = pd.DataFrame({"image_id": ["a", "b", "c"], "azimuth": [10.0, np.nan, 30.0], "category": "x"})
    assert unposed(df).tolist() == [False, True, False]
    out = with_sources(df)
    assert out["pose_source"].tolist() == ["given", None, "given"]
    assert out["pose_confidence"].tolist()[::2] == [1.0, 1.0] and np.isnan(out["pose_confidence"][1])
    assert np.isnan(out["elevation"]).all() and "theta" in out.columns
    assert unposed(pd.DataFrame({"image_id": ["a"]})).tolist() == [True]
