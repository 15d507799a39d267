import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import CLIPTextModel

from labelgen import pipeline
from labelgen.backbones import WeightsNotFound, build_backbone, default_conf
from labelgen.backbones.stable_diffusion import StableDiffusion, StableDiffusionDino
from labelgen.features import FeatureCache, FeatureWorker, worker_batch
from tests.support.tiny import tiny_demo_args


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A diffusers Stable Diffusion folder with a tiny VAE, UNet, CLIP text encoder and
    tokenizer built from configs (random weights), in the layout of the real one."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    ).save_pretrained(folder / "vae")
    UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16, 24, 24),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    ).save_pretrained(folder / "unet")
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=8,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).save_pretrained(folder / "text_encoder")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        folder / "scheduler"
    )
    tok = folder / "tokenizer"
    tok.mkdir()
    (tok / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"), model_max_length=8).save_pretrained(tok)
    return folder


def test_sd_features_are_the_unet_up_blocks_at_the_noised_latent(tiny_sd):
    sd = StableDiffusion(str(tiny_sd), timestep=100)
    assert sd.groups == (24, 24, 16) and sd.dim == 64  # reversed block_out_channels, first three
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        f = sd(x)
        # the same by hand: VAE mean, DDPM noise at t=100, UNet under the empty prompt
        z0 = sd.vae.encode(x).latent_dist.mean * sd.vae.config.scaling_factor
        noise = torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(0))
        a = sd.scheduler.alphas_cumprod[100]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        ids = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1]])  # "" = start, end, then end-token padding
        empty = CLIPTextModel.from_pretrained(tiny_sd / "text_encoder")(ids)[0]
        outs = []
        hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in sd.unet.up_blocks]
        sd.unet(zt, torch.tensor([100, 100]), encoder_hidden_states=empty.expand(2, -1, -1))
        for h in hooks:
            h.remove()
    assert [o.shape[1] for o in outs] == [24, 24, 16, 8]
    ref = torch.cat(
        [F.normalize(F.interpolate(o, size=(8, 8), mode="bilinear", antialias=True), dim=1) for o in outs[:3]], 1
    )
    assert f.shape == (2, 64, 8, 8)  # stride 16
    assert torch.allclose(f, F.normalize(ref, dim=1), atol=1e-5)
    assert torch.allclose(sd.empty_prompt, empty)


def test_sd_features_are_reproducible_skip_the_finest_block_and_depend_on_the_timestep(tiny_sd):
    sd = StableDiffusion(str(tiny_sd), timestep=100)
    calls = []
    sd.unet.up_blocks[3].register_forward_hook(lambda *a: calls.append(1))
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        a, b = sd(x), sd(x)
        late = StableDiffusion(str(tiny_sd), timestep=900)(x)
    assert calls == []  # the 1/8-scale block is never run
    assert torch.equal(a, b)  # fixed noise: the cache does not depend on when an image was seen
    assert (a * late).sum(1).mean() < 0.99
    assert sd.fingerprint(128) != StableDiffusion(str(tiny_sd), timestep=900).fingerprint(128)
    with pytest.raises(ValueError, match="sd_timestep=1000"):
        StableDiffusion(str(tiny_sd), timestep=1000)


def test_fused_descriptor_is_unit_dino_and_unit_sd_at_equal_weight(tiny_sd, dino_small_file):
    path, _ = dino_small_file
    fused = StableDiffusionDino("sd15_dinov2_vits14", str(path), str(tiny_sd), sd_image_size=128)
    assert fused.groups == (384, 24, 24, 16) and fused.dim == 448
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        f = fused(x)
        dino = fused.dino(x)
    assert f.shape == (1, 448, 8, 8)  # DINOv2's grid
    assert torch.allclose(f[:, :384] * 2**0.5, dino, atol=1e-5)
    assert torch.allclose(f[:, 384:].norm(dim=1), torch.full((1, 8, 8), 2**-0.5), atol=1e-5)
    assert set(fused.sources()) == {"weights", "sd_weights"}


def test_missing_sd_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFound, match=r"hf download stable-diffusion-v1-5/stable-diffusion-v1-5.*sd_weights="):
        StableDiffusion()
    with pytest.raises(WeightsNotFound, match="not found at /nowhere"):
        build_backbone(OmegaConf.merge(default_conf, {"name": "sd15", "sd_weights": "/nowhere"}))


def test_the_run_config_selects_fused_features_end_to_end_through_the_cache(
    tiny_sd, dino_small_file, tiny_demo, tmp_path
):
    path, _ = dino_small_file
    argv = [
        *tiny_demo_args(tiny_demo),
        f"store={tmp_path}",
        "backbone.name=sd15_dinov2_vits14",
        f"backbone.weights={path}",
        f"backbone.sd_weights={tiny_sd}",
        "backbone.image_size=112",
        "backbone.sd_image_size=128",
    ]
    conf = pipeline.parse(argv)
    inputs = pipeline.prepare(conf)
    fingerprint = inputs.fingerprint
    assert inputs.backbone_reason == "asked for" and fingerprint.startswith("sd15_dinov2_vits14-112-")
    cache = FeatureCache(str(tmp_path / "features"), fingerprint)
    worker = FeatureWorker(inputs.backbone, inputs.image_size, cache, foreground={"method": "image"})
    rows = inputs.df.head(2)
    out = worker(worker_batch(rows.assign(mask_uri=None)))
    assert list(out["error"]) == ["", ""]
    f = cache.load(rows.image_id.iloc[0])
    assert f.grid().shape == (8, 8, 448) and f.stride == 14 and len(f.feats) == f.stored.sum() > 0
    assert torch.allclose(f.feats.float().norm(dim=-1), torch.ones(len(f.feats)), atol=2e-3)  # float16 cache
