import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy.spatial.transform import Rotation

from labelgen.geometry import geodesic_deg, rotation
from labelgen.pairing import Band, azimuth_bins, category_tuples, default_conf, nearest_neighbours


def conf(**kw):
    return OmegaConf.merge(OmegaConf.create(default_conf), kw)


def full_pose(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"azimuth": rng.uniform(0, 360, n), "elevation": rng.uniform(-10, 40, n), "theta": rng.uniform(-10, 10, n)}
    )


def uniform_pose(n, seed=0):
    """Uniformly random rotations, as (azimuth, elevation, theta) of labelgen.geometry.rotation (Rz Rx Ry)."""
    zxy = Rotation.random(n, random_state=seed).as_euler("ZXY", degrees=True)
    return pd.DataFrame({"azimuth": zxy[:, 2], "elevation": zxy[:, 1], "theta": zxy[:, 0]})


def rotations(rows):
    return np.stack([rotation(*p) for p in rows[["azimuth", "elevation", "theta"]].to_numpy()])


def angles(r, i, j):
    """Geodesic degrees between rotations r[i] and r[j], elementwise (geodesic_deg's formula)."""
    return np.rad2deg(np.arccos(np.clip((np.einsum("...ab,...ab->...", r[i], r[j]) - 1) / 2, -1, 1)))


def per_anchor(tuples, n):
    return np.bincount(tuples[:, 0], minlength=n)


def test_bins_centre_on_multiples_and_wrap_on_the_circle():
    bins, wrap = azimuth_bins(np.array([0, 22, 23, 45, 315, 337, 359]), 45)
    assert wrap == 8
    assert bins.tolist() == [0, 0, 1, 1, 7, 7, 0]
    bins, wrap = azimuth_bins(np.array([-60, -45, -30, 0, 44]), 25)  # 360/25 is not whole: no wrap
    assert wrap is None
    assert bins.tolist() == [-2, -2, -1, 0, 2]


def test_bin_tuples_sweep_one_bin_per_hop_in_both_directions_and_wrap():
    rows = pd.DataFrame({"azimuth": np.repeat(np.arange(8) * 45.0, 2)})  # SPair-like: 8 bins of 2 images
    tuples = category_tuples(rows, conf(k=4, bin_deg=45, tuples_per_image=100))
    bins = (rows.azimuth.to_numpy()[tuples] / 45).astype(int)
    steps = (np.diff(bins, axis=1) + 8) % 8
    assert set(np.unique(steps[:, 0])) == {1, 7}  # forward and backward sweeps
    assert (steps == steps[:, :1]).all()  # monotone: the same direction throughout
    # all of them (fewer than the budget): 16 anchors x 2 directions x 2^3 image choices, across the 315 -> 0 wrap too
    assert len(tuples) == 16 * 2 * 8 and len({tuple(t) for t in tuples}) == len(tuples)
    assert (per_anchor(tuples, 16) == 16).all()
    assert ((bins[:, 0] == 7) & (bins[:, 1] == 0)).sum() == 2 * 8  # wrap: anchors of bin 7 sweep on to bin 0
    assert np.array_equal(tuples, tuples[np.lexsort(tuples.T[::-1])])


def test_bin_tuples_take_the_budget_per_image_and_skip_images_without_pose():
    az = np.concatenate([np.repeat(np.arange(5) * 30.0, 10), [np.nan] * 5])
    c = conf(k=4, bin_deg=30, tuples_per_image=7, both_directions=False)
    tuples = category_tuples(pd.DataFrame({"azimuth": az}), c)
    counts = per_anchor(tuples, 55)
    # bins 0 and 1 have three bins ahead (10^3 tuples each anchor): the budget; bins 2..4 none
    assert (counts[:20] == 7).all() and (counts[20:] == 0).all()
    assert len({tuple(t) for t in tuples}) == len(tuples)
    assert not np.isin(tuples, np.arange(50, 55)).any()
    assert (np.diff(np.floor(az[tuples] / 30 + 0.5), axis=1) == 1).all()
    again = category_tuples(pd.DataFrame({"azimuth": az}), c)  # deterministic for a seed
    assert np.array_equal(tuples, again)
    other = category_tuples(pd.DataFrame({"azimuth": az}), conf(**{**c, "seed": 1}))
    assert not np.array_equal(tuples, other) and other.shape == tuples.shape
    capped = category_tuples(pd.DataFrame({"azimuth": az}), conf(**{**c, "max_tuples": 50}))
    assert capped.shape == (50, 4) and {tuple(t) for t in capped} <= {tuple(t) for t in tuples}


def test_bin_tuples_draw_uniformly_from_an_anchor_s_tuples():
    # anchor bin 0 (one image), bin 1: 3 images, bin -1: 1 image, then 1 each: the forward
    # direction holds 3 of the anchor's 4 tuples; a budget of 2 draws pairs of them uniformly
    az = [0.0, 45, 46, 47, -45, 90, -90]
    seen = np.zeros(2)
    for seed in range(400):
        t = category_tuples(pd.DataFrame({"azimuth": az}), conf(k=3, bin_deg=45, tuples_per_image=2, seed=seed))
        t = t[t[:, 0] == 0]
        assert len(t) == 2 and len({tuple(x) for x in t}) == 2
        seen += [(t[:, 1] == 4).sum(), len(t)]
    assert seen[0] / seen[1] == pytest.approx(1 / 4, abs=0.04)  # the backward tuple is one of four


def test_too_few_bins_give_shorter_tuples_down_to_pairs():
    rows = pd.DataFrame({"azimuth": np.linspace(-60, 60, 13)})  # centred 45-deg bins -1, 0, 1: three
    tuples = category_tuples(rows, conf(k=4, bin_deg=45))
    assert tuples.shape[1] == 3 and len(tuples) > 0
    bins = np.floor(rows.azimuth.to_numpy()[tuples] / 45 + 0.5)
    assert (np.abs(np.diff(bins, axis=1)) == 1).all()
    two = category_tuples(pd.DataFrame({"azimuth": [0.0, 10.0, 40.0]}), conf(k=4, bin_deg=45))
    assert two.shape == (4, 2)  # bins 0 and 1: pairs, both directions
    assert category_tuples(pd.DataFrame({"azimuth": [0.0, 10.0]}), conf(k=4, bin_deg=45)).shape == (0, 4)


def test_geodesic_distance_of_known_rotations():
    r = np.stack([rotation(0, 0, 0), rotation(90, 0, 0), rotation(0, 30, 0), rotation(0, 0, 45), rotation(180, 0, 0)])
    d = geodesic_deg(r)
    assert d[0].tolist() == pytest.approx([0, 90, 30, 45, 180], abs=1e-4)
    assert np.allclose(d, d.T)


@pytest.mark.parametrize("bin_deg", [30, 45, 90])
@pytest.mark.parametrize("poses", [full_pose, uniform_pose])
def test_band_candidates_from_the_index_equal_brute_force(poses, bin_deg):
    r = rotations(poses(400, seed=3))
    d = geodesic_deg(r)
    rng = np.random.default_rng(0)
    prefix = np.stack([rng.integers(400, size=3000), rng.integers(400, size=3000)], axis=1)
    parent, child = Band(r, bin_deg).expand(prefix)
    a, last = prefix[:, 0], prefix[:, 1]
    ok = (np.abs(d[last] - bin_deg) <= 0.5 * bin_deg) & (d[a] >= d[a, last][:, None] + 0.25 * bin_deg)
    want = set(zip(*np.nonzero(ok)))
    assert len(want) > 1000
    assert set(zip(parent.tolist(), child.tolist())) == {(int(p), int(c)) for p, c in want}


def check_geodesic(tuples, r, bin_deg):
    k = tuples.shape[1]
    hops = angles(r, tuples[:, :-1], tuples[:, 1:])
    assert ((hops >= 0.5 * bin_deg) & (hops <= 1.5 * bin_deg)).all()
    from_anchor = angles(r, tuples[:, :1].repeat(k - 1, axis=1), tuples[:, 1:])
    assert (np.diff(from_anchor, axis=1) >= 0.25 * bin_deg).all() and (from_anchor[:, 0] >= 0.25 * bin_deg).all()
    assert (np.sort(tuples, axis=1)[:, 1:] != np.sort(tuples, axis=1)[:, :-1]).all()  # no repeats


def test_small_category_takes_every_tuple_an_anchor_has_when_fewer_than_the_budget():
    rows = full_pose(60)
    r = rotations(rows)
    tuples = category_tuples(rows, conf(k=4, bin_deg=40, tuples_per_image=10_000))  # more than any anchor has
    check_geodesic(tuples, r, 40)
    # brute force: every valid tuple of every anchor
    d = geodesic_deg(r)
    hop = np.abs(d - 40) <= 20
    full = [(a,) for a in range(60)]
    for _ in range(3):
        full = [(*t, j) for t in full for j in np.flatnonzero(hop[t[-1]] & (d[t[0]] >= d[t[0], t[-1]] + 10))]
    assert {tuple(t) for t in tuples} == {tuple(map(int, t)) for t in full}
    few = category_tuples(rows, conf(k=4, bin_deg=40, tuples_per_image=5))
    assert (per_anchor(few, 60) == np.minimum(5, per_anchor(tuples, 60))).all()
    assert {tuple(t) for t in few} <= {tuple(t) for t in tuples}
    capped = category_tuples(rows, conf(k=4, bin_deg=40, max_tuples=50))
    assert capped.shape == (50, 4)
    # azimuth alone: bins, as before
    assert category_tuples(rows.drop(columns="theta"), conf(k=4, bin_deg=45, max_tuples=50)).shape == (50, 4)
    with pytest.raises(ValueError, match="choose auto, bins, geodesic or similarity"):
        category_tuples(rows, conf(pose="nope"))


@pytest.mark.parametrize("poses", [full_pose, uniform_pose])
def test_fifty_thousand_poses_every_image_anchors_its_budget_of_valid_tuples(poses):
    n = 50_000
    rows = poses(n, seed=1)
    c = conf(k=4, bin_deg=45, tuples_per_image=3)
    tuples = category_tuples(rows, c)
    check_geodesic(tuples, rotations(rows), 45)
    assert (per_anchor(tuples, n) == 3).all()  # coverage: every image (the old 2000 cap left 96% out)
    assert len({tuple(t) for t in tuples}) == len(tuples)
    assert np.array_equal(tuples, tuples[np.lexsort(tuples.T[::-1])])


def test_with_anchors_only_they_anchor_and_the_others_take_part():
    rows = full_pose(2000, seed=2)
    rows.loc[5, "theta"] = np.nan  # unplaced: never in a tuple
    anchors = np.zeros(2000, dtype=bool)
    anchors[:300] = True
    tuples = category_tuples(rows, conf(k=4, bin_deg=45, tuples_per_image=4), anchors=anchors)
    assert anchors[tuples[:, 0]].all() and not anchors[tuples[:, 1:]].all()
    counts = per_anchor(tuples, 2000)
    assert (counts[:300][np.arange(300) != 5] == 4).all() and counts[300:].sum() == 0
    assert not (tuples == 5).any()
    check_geodesic(tuples, rotations(rows.fillna(0)), 45)
    # without: every image anchors its budget
    assert (np.delete(per_anchor(category_tuples(rows, conf(k=4, bin_deg=45, tuples_per_image=4)), 2000), 5) == 4).all()


def test_an_image_far_from_the_others_anchors_what_it_can():
    # a ring of azimuths at elevation 0, and one view from above: 90 deg from all of the ring
    rows = full_pose(500, seed=4).assign(elevation=0.0, theta=0.0)
    rows.loc[len(rows)] = {"azimuth": 0.0, "elevation": 90.0, "theta": 0.0}
    tuples = category_tuples(rows, conf(k=4, bin_deg=60, tuples_per_image=20))
    counts = per_anchor(tuples, 501)
    assert (counts[:500] == 20).all()
    # from above, the first hop (90 deg) reaches the whole ring but nothing lies farther than 90 deg: no tuple
    assert counts[500] == 0
    check_geodesic(tuples, rotations(rows), 60)


def test_chunked_nearest_neighbours_equal_the_brute_force_argsort(monkeypatch):
    import labelgen.pairing

    rng = np.random.default_rng(0)
    desc = rng.normal(size=(700, 16)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    monkeypatch.setattr(labelgen.pairing, "PAIRS_PER_CHUNK", 700 * 37)  # 37 rows a chunk, the last one short
    near = nearest_neighbours(desc, 5)
    dist = 1 - desc @ desc.T
    np.fill_diagonal(dist, np.inf)
    assert np.array_equal(near, np.argsort(dist, axis=1)[:, :5])


def test_without_pose_tuples_walk_feature_neighbours_away_from_the_anchor():
    # 20 images along a circle arc in descriptor space: neighbours are adjacent on the arc
    angles_ = np.linspace(0, np.pi / 2, 20)
    desc = np.stack([np.cos(angles_), np.sin(angles_)], axis=1)
    rows = pd.DataFrame({"azimuth": [np.nan] * 20})
    tuples = category_tuples(rows, conf(k=4, tuples_per_image=3, neighbours=2), descriptors=lambda r: desc)
    steps = np.diff(tuples, axis=1)
    assert (np.abs(steps) <= 2).all()  # one of the two nearest
    assert ((steps > 0).all(axis=1) | (steps < 0).all(axis=1)).all()  # always away from the anchor
    # the two nearest of an inner image are its two sides: one sweep each way, where the arc has room
    counts = per_anchor(tuples, 20)
    assert counts[3:17].tolist() == [2] * 14 and counts.tolist() == [2, 1, 1] + [2] * 14 + [1, 1, 2]
    assert category_tuples(rows, conf(k=4)).shape == (0, 4)  # no descriptors offered: no tuples


def test_similarity_tuples_are_every_walk_when_fewer_than_the_budget():
    rng = np.random.default_rng(1)
    desc = rng.normal(size=(80, 8))
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    rows = pd.DataFrame({"azimuth": [np.nan] * 80})
    got = category_tuples(rows, conf(k=4, tuples_per_image=1000, neighbours=4), descriptors=lambda r: desc)
    dist = 1 - desc @ desc.T
    np.fill_diagonal(dist, np.inf)
    near = np.argsort(dist, axis=1)[:, :4]
    np.fill_diagonal(dist, 0)
    want = [(a,) for a in range(80)]
    for _ in range(3):
        want = [(*t, int(j)) for t in want for j in near[t[-1]] if dist[t[0], j] >= dist[t[0], t[-1]] + 1e-6]
    assert len(want) > 500 and {tuple(t) for t in got} == set(want)
    few = category_tuples(rows, conf(k=4, tuples_per_image=2, neighbours=4), descriptors=lambda r: desc)
    assert (per_anchor(few, 80) == np.minimum(2, per_anchor(got, 80))).all()


def test_in_a_posed_category_the_images_without_pose_walk_feature_neighbours_and_none_is_left_out():
    rows = full_pose(60, seed=3)
    rows.loc[50:, ["azimuth", "elevation", "theta"]] = np.nan  # an estimator too unsure about the last 10
    angles_ = np.linspace(0, np.pi, 60)  # descriptors along an arc: neighbours are adjacent
    desc = np.stack([np.cos(angles_), np.sin(angles_)], axis=1)
    c = conf(k=3, bin_deg=45, tuples_per_image=4, neighbours=2)
    tuples = category_tuples(rows, c, descriptors=lambda r: desc[r.index])
    counts = per_anchor(tuples, 60)
    assert (counts > 0).all()  # every image anchors tuples: the posed by pose, the others by similarity
    by_pose, by_similarity = tuples[tuples[:, 0] < 50], tuples[tuples[:, 0] >= 50]
    assert (by_pose < 50).all()  # pose tuples take posed images only
    check_geodesic(by_pose, rotations(rows.iloc[:50]), 45)
    assert (np.abs(np.diff(by_similarity, axis=1)) <= 2).all()  # walks on the feature neighbours, any image
    # a named pose mode leaves them out, and so does a call without descriptors
    assert (
        per_anchor(
            category_tuples(rows, conf(k=3, bin_deg=45, tuples_per_image=4, pose="geodesic"), lambda r: desc[r.index]),
            60,
        )[50:]
        == 0
    ).all()
    assert (per_anchor(category_tuples(rows, c), 60)[50:] == 0).all()
