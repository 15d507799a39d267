import numpy as np
import pytest
import torch
from PIL import Image

from labelgen.features import FLIPPED, FeatureCache, ImageFeatures, fit, model_input, preprocess


def test_preprocess_pads_right_and_bottom_and_pools_the_mask():
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    mask = Image.new("L", (200, 100), 0)
    mask.paste(255, (0, 0, 100, 100))  # left half is the object
    x, fg, scale = preprocess(image, mask, 64, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (3, 64, 64) and scale == pytest.approx(0.32)
    assert torch.allclose(x[:, :32], torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, 32, 64), atol=1e-2)
    assert (x[:, 32:] == 0).all()  # padding is the mean colour
    # 8x8 grid: image rows 0-3, the object in columns 0-3
    expect = torch.zeros(8, 8, dtype=torch.bool)
    expect[:4, :4] = True
    assert torch.equal(fg, expect)
    # no mask: the whole image, not the padding
    _, fg, _ = preprocess(image, None, 64, 8, (0.5,) * 3, (0.5,) * 3)
    assert fg.sum() == 32 and fg[:4].all()


def test_the_mirror_of_the_resized_view_is_the_resized_mirror():
    """The worker mirrors the resized pixels and mask instead of resizing the mirrored image:
    the same input and foreground, also where the content does not fill whole cells
    (97 x 131 px -> 47 x 64 of 8 px cells: the foreground is pooled again, not mirrored)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (131, 97, 3), dtype=np.uint8))
    mask = Image.fromarray((rng.random((131, 97)) > 0.4).astype(np.uint8) * 255)
    pixels, area, scale = fit(image, mask, 64)
    x, fg = model_input(pixels[:, ::-1], area[:, ::-1], 64, 8, (0.5,) * 3, (0.2,) * 3)
    flip = Image.Transpose.FLIP_LEFT_RIGHT
    want_x, want_fg, want_scale = preprocess(image.transpose(flip), mask.transpose(flip), 64, 8, (0.5,) * 3, (0.2,) * 3)
    assert (
        torch.equal(torch.from_numpy(x).permute(2, 0, 1), want_x) and torch.equal(fg, want_fg) and scale == want_scale
    )


def test_cell_centres_map_back_to_original_pixels():
    f = ImageFeatures(
        torch.zeros(8, 8, 4), torch.ones(8, 8, dtype=torch.bool), scale=0.32, stride=8, width=200, height=100
    )
    xy = f.cell_xy(torch.tensor([0, 9, 63]))
    assert xy.tolist() == [[0, 0], [1, 1], [7, 7]]
    assert f.to_pixels(xy).flatten().tolist() == pytest.approx([12.5, 12.5, 37.5, 37.5, 187.5, 187.5])
    assert f.cell_px == pytest.approx(25.0)


def test_mask_of_the_wrong_size_is_an_error():
    with pytest.raises(ValueError, match="mask is 10x10 but the image is 200x100"):
        preprocess(Image.new("RGB", (200, 100)), Image.new("L", (10, 10)), 64, 8, (0,) * 3, (1,) * 3)


def test_cache_keeps_the_foreground_and_its_context_ring(tmp_path):
    grid = torch.nn.functional.normalize(torch.randn(6, 7, 16), dim=2)
    fg = torch.zeros(6, 7, dtype=torch.bool)
    fg[2:4, 1:3] = True
    fg[5, 6] = True
    f = ImageFeatures(grid, fg, scale=0.25, stride=14, width=300, height=280)
    stored = torch.zeros(6, 7, dtype=torch.bool)
    stored[1:5, 0:4] = True  # a ring of one cell (8-neighbours) around the block
    stored[4:6, 5:7] = True  # and around the corner cell, cut by the border
    assert torch.equal(f.stored, stored) and torch.equal(f.feats, grid[stored])
    assert torch.equal(f.fg_feats(), grid[fg])  # what the chains match: the grid's, row-major
    want = torch.nn.functional.normalize(grid[fg].mean(0), dim=0)
    assert np.allclose(f.descriptor(), want.numpy(), atol=1e-6)

    cache = FeatureCache(str(tmp_path), "fp")
    cache.save("cat/001.jpg", f)
    got = cache.load("cat/001.jpg")
    assert got.feats.dtype == torch.float16 and got.feats.shape == (int(stored.sum()), 16)
    assert torch.equal(got.fg, fg) and torch.equal(got.stored, stored)
    assert torch.allclose(got.fg_feats(), grid[fg], atol=1e-3)  # float16 on disk
    dense = got.grid()
    assert dense.shape == (6, 7, 16) and (dense[~stored] == 0).all()
    assert torch.allclose(dense[stored].float(), grid[stored], atol=1e-3)
    assert np.array_equal(got.descriptor(), f.descriptor())  # taken at write time, from the full grid
    assert (got.scale, got.stride, got.width, got.height) == (0.25, 14, 300, 280)
    assert len(open(cache.uri("cat/001.jpg"), "rb").read()) < 6 * 7 * 16 * 2  # less than the full float16 grid alone


def test_an_image_without_foreground_keeps_only_its_descriptor(tmp_path):
    grid = torch.nn.functional.normalize(torch.randn(4, 5, 8), dim=2)
    cache = FeatureCache(str(tmp_path), "fp")
    cache.save(
        "empty", ImageFeatures(grid, torch.zeros(4, 5, dtype=torch.bool), scale=1.0, stride=8, width=40, height=32)
    )
    got = cache.load("empty")
    assert got.feats.shape == (0, 8) and len(got.fg_feats()) == 0 and (got.grid() == 0).all()
    want = torch.nn.functional.normalize(grid.flatten(0, 1).mean(0), dim=0)  # pairing still sees the whole image
    assert np.allclose(got.descriptor(), want.numpy(), atol=1e-6)


def test_cache_listing(tmp_path):
    grid, fg = torch.randn(5, 6, 4), torch.rand(5, 6) > 0.5
    FeatureCache(str(tmp_path), "fp").save("cat/001.jpg", ImageFeatures(grid, fg, 0.25, 14, 300, 280, content="7:1|"))
    assert FeatureCache(str(tmp_path), "fp").versions(["cat/001.jpg", "cat/002.jpg"]) == {"cat/001.jpg": "7:1|"}
    assert FeatureCache(str(tmp_path), "other").versions(["cat/001.jpg"]) == {}
    assert not list(tmp_path.rglob("*.tmp"))  # written whole, then renamed


def test_cache_files_stay_where_earlier_labelgen_wrote_them():
    """Caches made before FeatureCache are still read: its paths are those features.cache_uri gave."""
    s3 = FeatureCache("s3://bucket/labels/features", "mobilenetv2-320-5e0c2f9a81b4")
    assert s3.uri("cat/001.jpg") == (
        "s3://bucket/labels/features/mobilenetv2-320-5e0c2f9a81b4/69/69e8187666546401a0dbc8303d5e91bed643f5f8.safetensors"
    )
    assert s3.uri("cat/001.jpg" + FLIPPED) == (
        "s3://bucket/labels/features/mobilenetv2-320-5e0c2f9a81b4/70/70e383306e3bab0db56b276791b98d1fadff4dc4.safetensors"
    )
    refined = FeatureCache("/data/store/features/", "mobilenetv2-320-5e0c2f9a81b4+adapter-m1-0badf00d")
    assert refined.uri("chelsea_00") == (
        "/data/store/features/mobilenetv2-320-5e0c2f9a81b4+adapter-m1-0badf00d/cb/"
        "cb8e7c1d1fda4b1feb7df45a8826b0d82fec656a.safetensors"
    )


def test_pca_foreground_finds_the_object_without_its_mask(tiny_demo, offline_backbone):
    """A demo view with the mask withheld: the first principal component separates the
    photo from the plain background."""
    import pandas as pd

    from labelgen.features import load_image, pca_foreground

    row = pd.read_parquet(tiny_demo).iloc[1]
    root = tiny_demo.rsplit("/", 1)[0]
    b = offline_backbone
    view = load_image(f"{root}/{row.uri}")
    x, truth, _ = preprocess(view, load_image(f"{root}/{row.mask_uri}", "L"), 320, b.stride, b.mean, b.std)
    _, inside, _ = preprocess(view, None, 320, b.stride, b.mean, b.std)
    with torch.no_grad():
        feats = b(x[None])[0]
    fg = pca_foreground(feats, inside)
    iou = (fg & truth).sum() / (fg | truth).sum()
    assert iou > 0.7, float(iou)  # measured 0.91
    assert not (fg & ~inside).any()


def test_actor_plan_pins_one_gpu_per_actor_else_shares_the_cpus():
    from omegaconf import OmegaConf

    from labelgen.features import default_conf, plan_actors

    conf = OmegaConf.create(default_conf)
    gpu = plan_actors(conf, {"CPU": 16, "GPU": 4})
    assert (gpu["actors"], gpu["num_gpus"], gpu["batch_size"]) == (4, 1, 32)
    cpu = plan_actors(conf, {"CPU": 8})
    assert (cpu["actors"], cpu["num_gpus"], cpu["threads"], cpu["batch_size"]) == (4, 0, 2, 8)
    forced = plan_actors(OmegaConf.merge(conf, {"device": "cuda", "actors": 2}), {"CPU": 2})  # GPUs the autoscaler adds
    assert (forced["actors"], forced["num_gpus"]) == (2, 1)


def test_features_of_a_replaced_file_are_stale(tmp_path):
    import pandas as pd

    from labelgen.features import with_versions

    (tmp_path / "a.png").write_bytes(b"first")
    (tmp_path / "b.png").write_bytes(b"other")
    df = with_versions(
        pd.DataFrame(
            {
                "image_id": ["a", "b", "c"],
                "uri": [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")],
                "mask_uri": [None, None, None],
            }
        )
    )
    grid, fg = torch.randn(5, 6, 4), torch.rand(5, 6) > 0.5
    cache = FeatureCache(str(tmp_path), "fp")
    cache.save("a", ImageFeatures(grid, fg, 0.25, 14, 300, 280, content=df.content[0]))
    cache.save("b", ImageFeatures(grid, fg, 0.25, 14, 300, 280))  # an older cache
    stale = cache.stale(df)
    assert stale.image_id.tolist() == ["b", "c"] and stale.cached.tolist() == ["", None]

    (tmp_path / "a.png").write_bytes(b"second, longer")  # replaced under the same id
    again = cache.stale(with_versions(df.drop(columns="content")))
    assert again.image_id.tolist() == ["a", "b", "c"] and again.cached.tolist() == [df.content[0], "", None]
