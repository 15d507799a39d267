import pyarrow as pa
import pytest
import torch
from omegaconf import OmegaConf

from labelgen.features import ImageFeatures
from labelgen.labels import LABEL_SCHEMA, candidates, default_conf, vote


def rows(*labels):
    """Candidate rows: (src_id, tgt_id, src_x, tgt_x, support, similarity)."""
    cols = {n: [] for n in LABEL_SCHEMA.names}
    for src_id, tgt_id, sx, tx, support, sim in labels:
        for name, v in dict(
            run_id="r", category="c", src_image_id=src_id, tgt_image_id=tgt_id, src_x=sx, src_y=0.0,
            tgt_x=tx, tgt_y=0.0, hops=1, cycle_error=1.0, similarity=sim, sphere_angle=None, support=support,
        ).items():
            cols[name].append(v)
    return pa.table(cols, schema=LABEL_SCHEMA)


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
