import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from labelgen.sphere import (
    SphereMapper,
    angle_deg,
    default_conf,
    orientation_loss,
    train_mapper,
    triplet_loss,
    viewpoint_loss,
)


def conf(**kw):
    return OmegaConf.merge(OmegaConf.create(default_conf), kw)


def grid(h=12, w=12):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1).float()


def cap(g, scale=0.15, mirror=False):
    """The image plane laid on a cap of the sphere, optionally mirrored."""
    x = (g[:, 0] - g[:, 0].mean()) * scale * (-1 if mirror else 1)
    y = (g[:, 1] - g[:, 1].mean()) * scale
    return F.normalize(torch.stack([x, y, torch.ones_like(x)], 1), dim=1)


def equidistant(g, scale=0.15):
    """The image plane wrapped on the sphere keeping distances from its centre."""
    d = g - g.mean(0)
    r = d.norm(dim=1) * scale
    u = d / d.norm(dim=1, keepdim=True).clamp_min(1e-9)
    return torch.cat([u * torch.sin(r)[:, None], torch.cos(r)[:, None]], 1)


def test_angles_between_known_directions():
    p = torch.tensor([[1.0, 0, 0], [1, 0, 0], [1, 0, 0]])
    q = torch.tensor([[0.0, 1, 0], [1, 0, 0], [-1, 0, 0]])
    assert angle_deg(p, q).tolist() == pytest.approx([90, 0, 180], abs=1e-3)


def test_triplet_loss_is_zero_for_a_faithful_map_and_the_margin_for_a_collapsed_one():
    g = grid()
    valid = torch.ones(1, len(g), dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    assert triplet_loss(equidistant(g)[None], g[None], valid, conf(), gen).item() == 0.0
    collapsed = F.normalize(torch.ones(1, len(g), 3), dim=-1)
    assert triplet_loss(collapsed, g[None], valid, conf(), gen).item() == pytest.approx(0.5)


def test_orientation_loss_tells_a_mirrored_map_apart():
    g = grid()
    valid = torch.ones(1, len(g), dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    straight = orientation_loss(cap(g)[None], g[None], valid, conf(), gen).item()
    mirrored = orientation_loss(cap(g, mirror=True)[None], g[None], valid, conf(), gen).item()
    assert min(straight, mirrored) == 0.0 and max(straight, mirrored) > 0.01


def test_viewpoint_loss_matches_mean_directions_to_azimuth_gaps():
    az = torch.tensor([0.0, 30.0, 90.0])
    rad = torch.deg2rad(az)
    means = torch.stack([torch.sin(rad), torch.zeros(3), torch.cos(rad)], 1)  # turned by the azimuth
    points, valid, cat = (
        means[:, None].repeat(1, 4, 1),
        torch.ones(3, 4, dtype=torch.bool),
        torch.zeros(3, dtype=torch.long),
    )
    assert viewpoint_loss(points, valid, az, cat).item() < 1e-6
    assert viewpoint_loss(points, valid, torch.tensor([0.0, 60.0, 90.0]), cat).item() == pytest.approx(
        2 * (math.radians(30) ** 2) / 6 * 2, rel=1e-3
    )  # pairs (0,1) and (1,2) off by 30 deg, both orders
    assert viewpoint_loss(points, valid, az, torch.tensor([0, 1, 2])).item() == 0.0  # no same-category pair


def test_mapper_size_and_training_lowers_the_loss():
    mapper = SphereMapper(768, ["a"])
    n = sum(p.numel() for p in mapper.parameters())
    core = sum(p.numel() for name, p in mapper.named_parameters() if not name.startswith(("prototype", "category")))
    assert 1.8e6 < core < 2.4e6  # the published head: about 2M
    gen = torch.Generator().manual_seed(0)
    images = []
    g = grid(8, 8)
    for cat in ("a", "b"):
        base = F.normalize(torch.randn(64, 32, generator=gen), dim=1)
        for az in (0.0, 30.0, 60.0):
            images.append(
                {"feats": base + 0.05 * torch.randn(64, 32, generator=gen), "grid": g, "category": cat, "azimuth": az}
            )
    mapper, history = train_mapper(images, conf(steps=60, dim=64, heads=4, images_per_step=6, samples=64))
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    pts = mapper(images[0]["feats"][None])[0]
    assert torch.allclose(pts.norm(dim=1), torch.ones(64), atol=1e-5)
    assert n > core


def test_sphere_filter_fills_angles_and_drops_far_labels():
    import pyarrow as pa

    from labelgen.features import ImageFeatures
    from labelgen.labels import LABEL_SCHEMA, Foreground, patch_index, sphere_filter

    fg = torch.zeros(4, 4, dtype=torch.bool)
    fg[1:3, 1:3] = True  # cells (col, row): (1,1) (2,1) (1,2) (2,2)
    f = Foreground.of(ImageFeatures(torch.zeros(4, 4, 8), fg, scale=0.5, stride=8, width=64, height=64))
    assert f.cell_px == 16.0
    assert patch_index(f, np.array([[24.0, 24.0], [40.0, 24.0], [24.0, 40.0]])).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="foreground patch centre"):
        patch_index(f, np.array([[8.0, 8.0]]))
    north, east = torch.tensor([0.0, 0, 1]), torch.tensor([1.0, 0, 0])
    points = {"a": torch.stack([north, north, north, north]), "b": torch.stack([north, east, north, east])}
    rows = [
        dict(
            run_id="r",
            category="c",
            src_image_id="a",
            tgt_image_id="b",
            src_x=24.0,
            src_y=24.0,
            tgt_x=tx,
            tgt_y=24.0,
            hops=1,
            cycle_error=0.0,
            similarity=1.0,
            sphere_angle=None,
            support=1,
        )
        for tx in (24.0, 40.0)
    ]
    kept = sphere_filter(pa.Table.from_pylist(rows, schema=LABEL_SCHEMA), {"a": f, "b": f}, points, 27.0)
    assert kept.column("tgt_x").to_pylist() == [24.0]  # 0 deg kept, 90 deg dropped
    assert kept.column("sphere_angle").to_pylist() == [0.0]


@pytest.mark.slow
def test_pipeline_filters_with_a_trained_mapper(tiny_demo, tiny_store, tmp_path, run_on_head, capsys):
    from labelgen import run as run_mod
    from labelgen.store import LabelStore
    from tests.support.tiny import tiny_demo_args

    store = tiny_store(tmp_path / "store")  # its run `first` is the base, labelled without the filter
    args = ["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store}"]
    assert run_mod.main([*args[1:], "labels.sphere=latest"]) == 2  # in-process: refused before Ray
    err = capsys.readouterr().err
    assert "no such spherical mapper" in err and "train_sphere" in err
    tiny = ["sphere.steps=5", "sphere.dim=32", "sphere.heads=2"]
    out = run_on_head(
        [*args, "run_id=auto", "labels.sphere=auto", *tiny]
    )  # no mapper yet: fits one to the run's features
    assert out.returncode == 0 and "fitted now to" in out.stdout, out.stderr[-3000:]
    out = run_on_head(["labelgen.train_sphere", f"store={store}", "run_id=first", *tiny])
    assert out.returncode == 0 and "use it: python -m labelgen.run labels.sphere=" in out.stdout, out.stderr[-2000:]
    out = run_on_head([*args, "run_id=filtered", "labels.sphere=latest", "labels.sphere_deg=20"])
    assert out.returncode == 0 and "(registered)" in out.stdout, out.stderr[-3000:]
    con = LabelStore(store).connect()
    base = con.execute("SELECT count(*) FROM label_history WHERE run_id = 'first'").fetchone()[0]
    for run_id, deg in (("auto", 27), ("filtered", 20)):
        n, worst, nulls = con.execute(
            "SELECT count(*), max(sphere_angle), count(*) - count(sphere_angle) FROM label_history WHERE run_id = ?",
            [run_id],
        ).fetchone()
        assert nulls == 0 and worst <= deg and 0 < n <= base
    assert con.execute("SELECT label_run FROM spheres ORDER BY created").fetchall() == [("auto",), ("first",)]
    assert (
        con.execute("SELECT counts->'sphere'->>'sphere_id' FROM runs WHERE run_id = 'auto'").fetchone()[0] is not None
    )
    con.close()
