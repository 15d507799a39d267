import numpy as np
import pytest
import torch
from transformers import Dinov2Config
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

from labelgen.backbones.base import WeightsNotFound
from labelgen.geometry import rotation
from labelgen.viewpoint.orient_anything import (
    COLUMNS,
    OUT_DIM,
    LegacyEmbeddings,
    OrientAnything,
    decode,
    estimate,
    find_weights,
)

# a two-block DINOv2 with the large model's patch and position grid: the full ViT-L takes 20 s to build here
SMALL = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=518, patch_size=14)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return OrientAnything(pretrained=False, config=SMALL)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def images(rng):
    return [rng.integers(0, 256, (120, 200, 3), dtype=np.uint8), rng.integers(0, 256, (300, 90, 3), dtype=np.uint8)]


def peaks(azimuth=0, polar=90, rotation_bin=90, confidence=(0.0, 0.0), rotation_bins=180) -> torch.Tensor:
    """(1, C) logits, zero but for one peak per block (bin indices as in their layout)."""
    logits = torch.zeros(1, 360 + 180 + rotation_bins + 2)
    logits[0, azimuth] = logits[0, 360 + polar] = logits[0, 540 + rotation_bin] = 10.0
    logits[0, -2:] = torch.tensor(confidence)
    return logits


def published_keys(layers: int) -> set[str]:
    """Key names of their DINOv2_MLP: transformers 4.38's Dinov2Model under `dinov2.`, MLP_dim under `down_sampler.`"""
    keys = {f"dinov2.embeddings.{k}" for k in ("cls_token", "mask_token", "position_embeddings")}
    keys |= {f"dinov2.embeddings.patch_embeddings.projection.{p}" for p in ("weight", "bias")}
    keys |= {f"dinov2.layernorm.{p}" for p in ("weight", "bias")}
    for i in range(layers):
        block = f"dinov2.encoder.layer.{i}."
        keys |= {block + f"layer_scale{j}.lambda1" for j in (1, 2)}
        for sub in ("norm1", "norm2", "mlp.fc1", "mlp.fc2", "attention.output.dense") + tuple(
            f"attention.attention.{n}" for n in ("query", "key", "value")
        ):
            keys |= {block + f"{sub}.{p}" for p in ("weight", "bias")}
    for net in ("net1", "net2"):
        keys |= {f"down_sampler.{net}.0.{p}" for p in ("weight", "bias")}
        stats = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        keys |= {f"down_sampler.{net}.1.{p}" for p in stats}
    return keys


def test_random_images_of_any_shape_give_one_row_each(model):
    x = model.preprocess(images(np.random.default_rng(0)))
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, OUT_DIM) == (2, 722)
    out = decode(logits)
    assert set(out) == set(COLUMNS) and all(v.shape == (2,) for v in out.values())
    assert ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()


def test_estimate_batches_give_what_one_batch_gives(model):
    ims = images(np.random.default_rng(1)) + [np.full((64, 64, 3), 200, np.uint8)]
    df = estimate(model, ims, batch_size=2)
    assert list(df.columns) == COLUMNS and len(df) == 3
    with torch.no_grad():
        whole = decode(model(model.preprocess(ims)))
    for c in COLUMNS:
        np.testing.assert_allclose(df[c].to_numpy(), whole[c].numpy(), rtol=1e-4, atol=1e-3)
    assert list(estimate(model, []).columns) == COLUMNS


def test_decoding_known_peaks():
    cases = [  # (azimuth bin, polar bin, rotation bin) -> (azimuth, elevation, theta) in this project's convention
        ((0, 90, 90), (0, 0, 0)),
        ((90, 120, 100), (90, 30, -10)),
        ((359, 60, 80), (-1, -30, 10)),  # azimuth wraps to [-180, 180)
        ((180, 179, 0), (-180, 89, 90)),
        ((181, 0, 179), (-179, -90, -89)),
    ]
    for (a, p, r), expected in cases:
        out = decode(peaks(a, p, r, confidence=(2.0, 0.0)))
        assert (out["azimuth"].item(), out["elevation"].item(), out["theta"].item()) == expected
        # their confidence: the first of the softmax over the last two logits
        assert out["confidence"].item() == pytest.approx(np.exp(2) / (np.exp(2) + 1), rel=1e-6)
    # their other layouts: a 360-bin rotation is centred on bin 180
    assert decode(peaks(rotation_bin=190, rotation_bins=360))["theta"].item() == -10


def test_decoded_angles_turn_the_object_as_their_visualisation_does():
    """Their axis drawing (utils.get_proj2D_XYZ): azimuth 90 shows the object's left side with the
    front pointing left, polar above 90 looks from above, a positive rotation turns it
    counter-clockwise on screen. Object frame (labelgen.synthetic.categories): front -z, up -y,
    left +x; camera frame: x right, y down, z away from the camera."""
    front, up, left = np.array([0, 0, -1.0]), np.array([0, -1.0, 0]), np.array([1.0, 0, 0])

    def turned(a, p, r):
        out = decode(peaks(a, p, r))
        return rotation(out["azimuth"].item(), out["elevation"].item(), out["theta"].item())

    R = turned(90, 90, 90)
    assert (R @ front)[0] < -0.99 and (R @ left)[2] < -0.99  # front to the image's left, left side seen
    R = turned(0, 120, 90)
    assert (R @ front)[1] > 0.4 and (R @ up)[2] < -0.4  # front down the image, the top seen: from above
    R = turned(0, 90, 100)
    assert (R @ up)[0] < -0.1  # the top leans left: counter-clockwise on screen (y down)


def test_spread_is_circular():
    def spread(bins):
        logits = peaks()
        logits[0, :360] = -30.0
        logits[0, bins] = 0.0
        return decode(logits)["spread"].item()

    assert spread([10]) < 0.01
    assert spread([359, 1]) == pytest.approx(1.0, abs=0.01)  # across 0/360: one degree, not 179
    assert spread([0, 180]) > 180  # opposite azimuths: no direction at all
    assert spread(list(range(0, 360, 30))) > 180


def test_state_dict_has_the_published_names_and_sizes(model):
    assert set(model.state_dict()) == published_keys(layers=2)
    with torch.device("meta"):  # the default architecture without its 20 s random init
        large = OrientAnything(pretrained=False)
    state = large.state_dict()
    assert set(state) == published_keys(layers=24)
    assert state["dinov2.embeddings.position_embeddings"].shape == (1, 37 * 37 + 1, 1024)
    assert state["dinov2.encoder.layer.23.attention.attention.query.weight"].shape == (1024, 1024)
    assert state["down_sampler.net1.0.weight"].shape == (722, 1024)
    assert state["down_sampler.net2.1.running_var"].shape == (722,)
    # README of SpatialVision/Orient-Anything: Orient-Anything-Large 305 M parameters
    assert sum(p.numel() for p in large.parameters()) == 304_368_640 + 1_264_944
    assert large.image_size == 224 and large.name == "orient-anything" and large.weights is None


def test_a_saved_state_loads_strictly_and_gives_the_same_logits(model, tmp_path):
    path = tmp_path / "dino_weight.pt"
    torch.save(model.state_dict(), path)
    loaded = OrientAnything(weights=str(path), config=SMALL)
    assert loaded.weights == str(path) and not loaded.training
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
    x = model.preprocess(images(np.random.default_rng(2)))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    fresh = OrientAnything(pretrained=False, config=SMALL)
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)  # as their app.py loads the file
    with torch.no_grad():
        assert torch.equal(model(x), fresh.eval()(x))
    torch.save({k.replace("down_sampler", "head"): v for k, v in model.state_dict().items()}, path)
    with pytest.raises(ValueError, match="not an Orient Anything checkpoint"):
        OrientAnything(weights=str(path), config=SMALL)


def test_find_weights_looks_in_the_config_then_the_cache(empty_cache, tmp_path_factory):
    assert find_weights() is None
    local = tmp_path_factory.mktemp("w") / "dino_weight.pt"
    local.write_bytes(b"x")
    assert find_weights(str(local)) == str(local)
    assert find_weights("/nowhere/dino_weight.pt") is None
    repo = empty_cache / "models--Viglong--Orient-Anything"
    (repo / "snapshots" / "abc123" / "croplargeEX2").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "croplargeEX2" / "dino_weight.pt").write_bytes(b"x")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert find_weights().endswith("snapshots/abc123/croplargeEX2/dino_weight.pt")


def test_missing_weights_say_how_to_get_them(empty_cache):
    with pytest.raises(
        WeightsNotFound, match=r"`hf download Viglong/Orient-Anything croplargeEX2/dino_weight.pt`.*pose"
    ):
        OrientAnything()
    with pytest.raises(WeightsNotFound, match="not found at /nowhere/dino_weight.pt.*pose.weights="):
        OrientAnything(weights="/nowhere/dino_weight.pt")


def test_framing_pads_black_to_a_square_around_the_box(model):
    white = np.float32((1 - np.array(model.mean)) / np.array(model.std))
    black = np.float32(-np.array(model.mean) / np.array(model.std))
    wide = np.full((50, 100, 3), 255, np.uint8)  # padded above and below, 15% margin around
    x = model.preprocess([wide])[0].numpy()
    np.testing.assert_allclose(x[:, 112, 112], white, atol=1e-5)
    np.testing.assert_allclose(x[:, 112, 20], white, atol=1e-5)  # the 15% margin: the crop to 224 leaves 2%
    assert (x[:, 112, 0] < white - 0.5).all()
    np.testing.assert_allclose(x[:, 0, 112], black, atol=1e-5)
    half = np.zeros((100, 200, 3), np.uint8)
    half[:, :100] = 255
    left, right = model.preprocess([half, half], boxes=[(0, 0, 100, 100), (100.5, -10, 250, 100)]).numpy()
    np.testing.assert_allclose(left[:, 112, 112], white, atol=1e-5)
    np.testing.assert_allclose(right[:, 112, 112], black, atol=1e-5)
    mask = np.zeros((100, 200), bool)
    mask[20:80, 150:190] = True  # on the black half: the masked-out white is blacked out, the box is the mask's
    np.testing.assert_allclose(model.preprocess([half], masks=[mask]).numpy().max(axis=(2, 3))[0], black, atol=1e-5)
    with pytest.raises(ValueError, match="holds no pixel"):
        model.preprocess([half], boxes=[(300, 0, 400, 50)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        model.preprocess([half.astype(np.float32)])


def test_position_embeddings_are_resampled_as_in_transformers_4_38():
    """Their pinned transformers==4.38 scales the 37x37 grid by (16 + 0.1) / 37 at 224 px."""
    torch.manual_seed(0)
    new = Dinov2Embeddings(SMALL)
    torch.nn.init.normal_(new.position_embeddings)
    old = LegacyEmbeddings(SMALL)
    old.load_state_dict(new.state_dict())
    tokens = torch.zeros(1, 257, 64)
    with torch.no_grad():
        got = old.interpolate_pos_encoding(tokens, 224, 224)
        grid = new.position_embeddings[:, 1:].reshape(1, 37, 37, 64).permute(0, 3, 1, 2)
        scaled = torch.nn.functional.interpolate(grid, scale_factor=16.1 / 37, mode="bicubic", align_corners=False)
        assert torch.allclose(got[0, 1:], scaled.flatten(2)[0].T)
        assert torch.equal(got[:, :1], new.position_embeddings[:, :1])
        assert not torch.allclose(got, new.interpolate_pos_encoding(tokens, 224, 224), atol=1e-3)
        assert torch.equal(old.interpolate_pos_encoding(torch.zeros(1, 1370, 64), 518, 518), old.position_embeddings)
