import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from labelgen.backbones import WeightsNotFound, build_backbone, default_conf, resolve_name
from labelgen.backbones.dinov2 import DinoV2
from labelgen.demo import load_photo


def imagenet_input(image, backbone, size=224):
    x = torch.from_numpy(np.asarray(image.resize((size, size)), dtype=np.float32) / 255).permute(2, 0, 1)
    return ((x - torch.tensor(backbone.mean)[:, None, None]) / torch.tensor(backbone.std)[:, None, None])[None]


def test_offline_weights_are_real_imagenet_weights(offline_backbone):
    with torch.no_grad():
        probs = offline_backbone.classify(imagenet_input(load_photo("chelsea"), offline_backbone)).softmax(-1)[0]
    assert probs.argmax().item() == 285  # Egyptian cat
    assert probs[285] > 0.6  # measured 0.70


def test_offline_features_are_unit_vectors_on_the_stride_8_grid(offline_backbone):
    with torch.no_grad():
        f = offline_backbone(torch.randn(2, 3, 320, 256))
    assert f.shape == (2, 288, 40, 32)
    assert torch.allclose(f.norm(dim=1), torch.ones(2, 40, 32), atol=1e-5)
    fp = offline_backbone.fingerprint(320)
    assert fp.startswith("mobilenetv2-320-") and fp != offline_backbone.fingerprint(352)


def test_image_size_must_suit_the_backbone(offline_backbone):
    with pytest.raises(ValueError, match="multiple of 32, e.g. 320"):
        offline_backbone.check_size(330)


def test_dinov2_loads_a_local_file_and_gives_last_block_tokens(dino_small_file):
    path, reference = dino_small_file
    backbone = DinoV2("dinov2_vits14", weights=str(path))
    assert torch.equal(backbone.model.pos_embed, reference.pos_embed)  # the file's weights, not a fresh init
    x = torch.randn(1, 3, 112, 140)
    with torch.no_grad():
        f = backbone(x)
        # tokens of the last block before the final norm, straight from timm
        tokens = reference.forward_intermediates(x, indices=1, norm=False, intermediates_only=True)[0]
    assert f.shape == (1, 384, 8, 10)
    assert torch.allclose(f, torch.nn.functional.normalize(tokens, dim=1), atol=1e-5)


def test_auto_picks_dinov2_from_the_hugging_face_cache(dino_small_file, tmp_path, monkeypatch):
    path, _ = dino_small_file
    snapshot = tmp_path / "models--timm--vit_small_patch14_dinov2.lvd142m" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(path)
    (tmp_path / "models--timm--vit_small_patch14_dinov2.lvd142m" / "refs").mkdir()
    (tmp_path / "models--timm--vit_small_patch14_dinov2.lvd142m" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    conf = OmegaConf.create(default_conf)
    assert resolve_name(conf) == ("dinov2_vits14", "auto: dinov2_vits14 weights found")
    backbone, _ = build_backbone(conf)
    assert backbone.name == "dinov2_vits14" and backbone.dim == 384


def test_auto_falls_back_to_the_offline_backbone(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    name, reason = resolve_name(OmegaConf.create(default_conf))
    assert name == "mobilenetv2" and "no DINOv2 weights found" in reason


def test_missing_dinov2_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFound, match=r"hf download timm/vit_base_patch14_dinov2.lvd142m.*backbone.weights="):
        DinoV2("dinov2_vitb14")
    with pytest.raises(WeightsNotFound, match="not found at /nowhere/model.safetensors"):
        DinoV2("dinov2_vitb14", weights="/nowhere/model.safetensors")
