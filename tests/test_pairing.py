import numpy as np
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
