import numpy as np
import pytest
from omegaconf import OmegaConf

from labelgen.pairing import azimuth_bins, default_conf, sample_tuples


def conf(**kw):
    return OmegaConf.merge(OmegaConf.create(default_conf), kw)


def test_bins_centre_on_multiples_and_wrap_on_the_circle():
    bins, wrap = azimuth_bins(np.array([0, 22, 23, 45, 315, 337, 359]), 45)
    assert wrap == 8
    assert bins.tolist() == [0, 0, 1, 1, 7, 7, 0]
    bins, wrap = azimuth_bins(np.array([-60, -45, -30, 0, 44]), 25)  # 360/25 is not whole: no wrap
    assert wrap is None
    assert bins.tolist() == [-2, -2, -1, 0, 2]


def test_tuples_sweep_one_bin_per_hop_in_both_directions():
    az = np.repeat(np.arange(8) * 45.0, 2)  # SPair-like: 8 bins of 2 images
    tuples = sample_tuples(az, conf(k=4, bin_deg=45, max_tuples=10_000))
    bins = (az[tuples] / 45).astype(int)
    steps = (np.diff(bins, axis=1) + 8) % 8
    assert set(np.unique(steps[:, 0])) == {1, 7}  # forward and backward sweeps
    assert (steps == steps[:, :1]).all()  # monotone: the same direction throughout
    # all of them: 8 starts x 2 directions x 2^4 image choices, across the 315 -> 0 wrap too
    assert len(tuples) == 8 * 2 * 16
    assert len({tuple(t) for t in tuples}) == len(tuples)


def test_sampling_caps_tuples_and_skips_images_without_pose():
    az = np.concatenate([np.repeat(np.arange(5) * 30.0, 10), [np.nan] * 5])
    tuples = sample_tuples(az, conf(k=4, bin_deg=30, max_tuples=300, both_directions=False))
    assert tuples.shape == (300, 4)
    assert len({tuple(t) for t in tuples}) == 300
    assert not np.isin(tuples, np.arange(50, 55)).any()
    # deterministic for a seed
    again = sample_tuples(az, conf(k=4, bin_deg=30, max_tuples=300, both_directions=False))
    assert np.array_equal(tuples, again)


def test_too_few_bins_give_no_tuples():
    tuples = sample_tuples(np.array([0.0, 10, 50, 90]), conf(k=4, bin_deg=45))
    assert tuples.shape == (0, 4)  # bins 0, 0, 1, 2: no run of four


def test_geodesic_distance_of_known_rotations():
    from labelgen.geometry import geodesic_deg, rotation

    r = np.stack([rotation(0, 0, 0), rotation(90, 0, 0), rotation(0, 30, 0), rotation(0, 0, 45), rotation(180, 0, 0)])
    d = geodesic_deg(r)
    assert d[0].tolist() == pytest.approx([0, 90, 30, 45, 180], abs=1e-4)
    assert np.allclose(d, d.T)


def test_full_pose_tuples_step_by_geodesic_angle_and_move_away_from_the_anchor():
    import pandas as pd

    from labelgen.geometry import geodesic_deg, rotation
    from labelgen.pairing import category_tuples

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"azimuth": rng.uniform(0, 360, 60), "elevation": rng.uniform(-10, 30, 60),
                         "theta": rng.uniform(-10, 10, 60)})
    tuples = category_tuples(rows, conf(k=4, bin_deg=40, max_tuples=50))
    assert tuples.shape == (50, 4)
    d = geodesic_deg(np.stack([rotation(*p) for p in rows[["azimuth", "elevation", "theta"]].to_numpy()]))
    hops = np.array([[d[t[i], t[i + 1]] for i in range(3)] for t in tuples])
    assert ((hops >= 20) & (hops <= 60)).all()
    from_anchor = np.array([[d[t[0], t[i]] for i in range(1, 4)] for t in tuples])
    assert (np.diff(from_anchor, axis=1) >= 10).all()  # a quarter step farther each hop
    # azimuth alone: bins, as before
    assert category_tuples(rows.drop(columns="theta"), conf(k=4, bin_deg=45, max_tuples=50)).shape == (50, 4)
    with pytest.raises(ValueError, match="choose auto, bins, geodesic or similarity"):
        category_tuples(rows, conf(pose="nope"))


def test_without_pose_tuples_walk_feature_neighbours_away_from_the_anchor():
    import pandas as pd

    from labelgen.pairing import category_tuples

    # 20 images along a circle arc in descriptor space: neighbours are adjacent on the arc
    angles = np.linspace(0, np.pi / 2, 20)
    desc = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    rows = pd.DataFrame({"azimuth": [np.nan] * 20})
    tuples = category_tuples(rows, conf(k=4, max_tuples=30, neighbours=2), descriptors=lambda r: desc)
    assert len(tuples) == 30
    steps = np.diff(tuples, axis=1)
    assert (np.abs(steps) <= 2).all()  # one of the two nearest
    assert ((steps > 0).all(axis=1) | (steps < 0).all(axis=1)).all()  # always away from the anchor
    assert category_tuples(rows, conf(k=4)).shape == (0, 4)  # no descriptors offered: no tuples


def test_poses_that_span_fewer_bins_than_k_give_shorter_tuples():
    import pandas as pd

    from labelgen.pairing import category_tuples

    rows = pd.DataFrame({"azimuth": np.linspace(-60, 60, 13)})  # centred 45-deg bins -1, 0, 1: three
    tuples = category_tuples(rows, conf(k=4, bin_deg=45, max_tuples=10_000))
    assert tuples.shape[1] == 3 and len(tuples) > 0
    bins = np.floor(rows.azimuth.to_numpy()[tuples] / 45 + 0.5)
    assert (np.abs(np.diff(bins, axis=1)) == 1).all()
    two = category_tuples(pd.DataFrame({"azimuth": [0.0, 10.0, 40.0]}), conf(k=4, bin_deg=45))
    assert two.shape == (4, 2)  # bins 0 and 1: pairs, both directions
    assert category_tuples(pd.DataFrame({"azimuth": [0.0, 10.0]}), conf(k=4, bin_deg=45)).shape == (0, 4)
