import numpy as np
import pyarrow as pa
import pytest
import torch
from omegaconf import OmegaConf

from labelgen.features import ImageFeatures
from labelgen.labels import LABEL_SCHEMA, candidates, default_conf
from labelgen.vote import pair_check, vote


def rows(*labels):
    """Candidate rows: (src_id, tgt_id, src_x, tgt_x, support, similarity); other columns null."""
    return pa.Table.from_pylist(
        [
            dict(
                run_id="r",
                category="c",
                src_image_id=src_id,
                tgt_image_id=tgt_id,
                src_x=sx,
                src_y=0.0,
                tgt_x=tx,
                tgt_y=0.0,
                hops=1,
                cycle_error=1.0,
                similarity=sim,
                support=support,
                pair_error=0.0,
            )
            for src_id, tgt_id, sx, tx, support, sim in labels
        ],
        schema=LABEL_SCHEMA,
    )


def test_vote_sums_support_across_chunks_and_keeps_the_best_target():
    conf = OmegaConf.create(default_conf)
    chunk1 = rows(("a", "b", 4, 10, 2, 0.9), ("a", "b", 4, 20, 3, 0.8), ("a", "b", 12, 30, 1, 0.7))
    chunk2 = rows(("a", "b", 4, 10, 2, 0.9), ("b", "a", 10, 4, 1, 0.9))
    out = vote([chunk1, chunk2], conf).to_pylist()
    got = {(r["src_image_id"], r["src_x"]): (r["tgt_x"], r["support"]) for r in out}
    # a:4 -> b:10 has 2 + 2 = 4 votes and beats a:4 -> b:20 with 3
    assert got == {("a", 4.0): (10.0, 4), ("a", 12.0): (30.0, 1), ("b", 10.0): (4.0, 1)}
    conf.min_support = 2
    assert len(vote([chunk1, chunk2], conf)) == 1
    conf.vote, conf.min_support = False, 1
    assert len(vote([chunk1, chunk2], conf)) == 4  # all distinct candidates


def test_vote_tie_goes_to_the_more_similar_target():
    out = vote([rows(("a", "b", 4, 10, 1, 0.5), ("a", "b", 4, 20, 1, 0.6))], OmegaConf.create(default_conf))
    assert out.column("tgt_x").to_pylist() == [20.0]


def test_candidates_of_identical_images_are_exact_and_cover_all_ordered_pairs():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(6, 6, 32, generator=g), dim=2)
    fg = torch.zeros(6, 6, dtype=torch.bool)
    fg[1:5, 1:5] = True
    images = {i: ImageFeatures(feats, fg, scale=0.5, stride=8, width=96, height=96) for i in "wxyz"}
    table, stats = candidates("r", "c", [("w", "x", "y", "z")], images, OmegaConf.create(default_conf))
    assert stats["seeds"] == 16 and stats["after_hop3"] == 16
    assert table.num_rows == 12 * 16  # 12 ordered pairs x 16 foreground patches
    t = table.to_pandas()
    assert (t.src_x == t.tgt_x).all() and (t.src_y == t.tgt_y).all()
    assert sorted(t.src_x.unique()) == [24.0, 40.0, 56.0, 72.0]  # (col + 0.5) * 8 / 0.5
    assert sorted(t.hops.unique()) == [1, 2, 3]
    assert t.similarity.to_numpy() == pytest.approx(1.0, abs=1e-5)


def test_the_pair_check_drops_composed_labels_whose_direct_match_disagrees():
    """Features on a circle, one row of four patches per image: chains w -> x -> y map
    patch p to p, yet y's patches are nearest to w's next patch; the composed pair disagrees."""

    def image(degrees):
        a = torch.deg2rad(torch.tensor(degrees, dtype=torch.float32))
        return ImageFeatures(
            torch.stack([a.cos(), a.sin()], -1)[None],
            torch.ones(1, 4, dtype=torch.bool),
            scale=1.0,
            stride=8,
            width=32,
            height=8,
        )

    images = {"w": image([0, 20, 40, 60]), "x": image([8, 28, 48, 68]), "y": image([16, 36, 56, 76])}
    table, stats = candidates("r", "c", [("w", "x", "y")], images, OmegaConf.create(default_conf))
    t = table.to_pandas()
    assert stats["composed"] == table.num_rows == 3 * 2 * 4  # 3 pairs, both directions, 4 patches
    assert (t[t.hops == 1].pair_error == 0).all()
    assert sorted(t[t.hops == 2].pair_error) == [0, 0] + [1] * 6  # one patch off, but at the ends
    c = pair_check(table, 0.5).to_pandas()
    assert len(c) == 16 + 2 and (c[c.hops == 1].src_x == c[c.hops == 1].tgt_x).all()
    assert sorted(zip(c[c.hops == 2].src_image_id, c[c.hops == 2].src_x)) == [("w", 28.0), ("y", 4.0)]
    assert pair_check(table, None).num_rows == table.num_rows


def test_no_labels_between_views_beyond_the_pose_gap_cap():
    from labelgen.geometry import rotation

    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(4, 4, 16, generator=g), dim=2)
    images = {
        i: ImageFeatures(feats, torch.ones(4, 4, dtype=torch.bool), scale=1.0, stride=8, width=32, height=32)
        for i in "wxyz"
    }
    rotations = {i: rotation(az, 0.0, 0.0) for i, az in zip("wxyz", [0, 40, 80, 120])}
    conf = OmegaConf.merge(default_conf, {"max_gap_deg": 90.0})
    table, stats = candidates("r", "c", [tuple("wxyz")], images, conf, rotations)
    pairs = set(zip(*table.select(["src_image_id", "tgt_image_id"]).to_pydict().values()))
    assert stats["composed"] == 12 * 16 and stats["candidates"] == 10 * 16  # not w-z: 120 deg
    assert ("w", "z") not in pairs and ("z", "w") not in pairs and ("w", "y") in pairs


def test_confidence_is_the_logistic_model_of_the_signals_and_the_quota_keeps_the_most_confident():
    from labelgen.vote import confidence_filter

    table = rows(("a", "b", 4, 10, 1, 0.9), ("a", "b", 12, 20, 4, 0.2), ("c", "b", 8, 10, 1, 0.1))
    conf = OmegaConf.merge(
        default_conf,
        {
            "keep": None,
            "confidence": {
                "bias": -1.0,
                "log_support": 1.0,
                "similarity": 2.0,
                "cycle_error": 0.0,
                "pair_error": 0.0,
                "hops": 0.0,
                "pose_gap": 0.0,
            },
        },
    )
    pairs = table.group_by(["src_image_id", "tgt_image_id"]).aggregate([])
    # logits: -1 + 0 + 1.8 = 0.8, -1 + log 4 + 0.4 = 0.786 and -1 + 0 + 0.2 = -0.8
    out = confidence_filter(table, conf, {"a": 10, "c": 5}, pairs)
    assert out.column("confidence").to_pylist() == pytest.approx(
        [1 / (1 + np.exp(-0.8)), 1 / (1 + np.exp(-(np.log(4) - 0.6))), 1 / (1 + np.exp(0.8))]
    )
    # per source image a budget of keep * its foreground patches * its pairs examined, most confident first
    conf.keep = 0.1  # a: 1 label, c: 0.5 -> 0 (rounded to even)
    assert confidence_filter(table, conf, {"a": 10, "c": 5}, pairs).column("src_x").to_pylist() == [4.0]
    conf.keep = 0.2  # a: 2, c: 1
    assert confidence_filter(table, conf, {"a": 10, "c": 5}, pairs).column("src_x").to_pylist() == [4.0, 12.0, 8.0]
    conf.keep = 0.15  # with 5 patches each: a 1 (0.75), c 1: c's label stays though a's second is more confident
    assert confidence_filter(table, conf, {"a": 5, "c": 5}, pairs).column("src_x").to_pylist() == [4.0, 8.0]
    # the same labels whatever shifts every similarity: a rank, not a threshold
    shifted = table.set_column(
        table.schema.get_field_index("similarity"),
        "similarity",
        pa.array([x + 3.0 for x in table.column("similarity").to_pylist()], pa.float32()),
    )
    assert confidence_filter(shifted, conf, {"a": 5, "c": 5}, pairs).column("src_x").to_pylist() == [4.0, 8.0]


def test_the_vote_over_partitions_by_source_image_equals_the_whole_vote():
    from labelgen.vote import partition_of

    g = np.random.default_rng(0)
    cands = [
        rows(
            *[
                (
                    f"i{g.integers(6)}",
                    f"i{g.integers(6)}",
                    float(g.integers(4)),
                    float(g.integers(4)),
                    int(g.integers(1, 4)),
                    float(g.random()),
                )
                for _ in range(200)
            ]
        )
        for _ in range(3)
    ]  # three chunks
    conf = OmegaConf.create(default_conf)
    whole = vote(cands, conf)
    parts = [{int(k): c.filter(pa.array(partition_of(c["src_image_id"], 4) == k)) for k in range(4)} for c in cands]
    parts = [{k: t for k, t in p.items() if t.num_rows} for p in parts]
    assert all(sorted(p) != [0] for p in parts)  # the rows did spread over partitions
    split = pa.concat_tables([vote([p[k] for p in parts if k in p], conf) for k in range(4)])
    key = ["src_image_id", "tgt_image_id", "src_y", "src_x", "tgt_y", "tgt_x"]
    assert split.sort_by([(k, "ascending") for k in key]).equals(whole.sort_by([(k, "ascending") for k in key]))
    src = {}
    for p in parts:
        for k, t in p.items():
            src.setdefault(k, set()).update(t.column("src_image_id").to_pylist())
    assert all(not (src[a] & src[b]) for a in src for b in src if a != b)  # a source image lives in one partition
