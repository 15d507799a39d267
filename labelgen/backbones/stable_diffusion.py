"""Stable Diffusion UNet decoder features, alone or fused with DINOv2 (SD-DINO / GeoAware-SC).

The image is encoded by the VAE, noised to a small timestep and denoised once by the
UNet under the empty prompt; the outputs of the first three decoder up-blocks
(1280, 1280 and 640 channels for SD 1.5) are the features. They carry the layout
and part semantics that complement DINOv2's: the fused descriptor L2-normalises
each part, concatenates and normalises again, so both weigh the same.

Weights are a diffusers model folder (vae/, unet/, text_encoder/, tokenizer/,
scheduler/), named by `backbone.sd_weights` or found in the Hugging Face cache.
"""

import hashlib
import os

import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache

from ..errors import UsageError
from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, WeightsNotFound, file_digest, normalize
from .dinov2 import ARCHS as DINO_ARCHS
from .dinov2 import DinoV2

SD_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD_LEVELS = (1280, 1280, 640)  # up-block outputs of SD 1.x / 2.x, coarse to fine
FUSED = {f"sd15_{name}": name for name in DINO_ARCHS}  # fused backbone -> its DINOv2
NAMES = ["sd15", *FUSED]
SUBFOLDERS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


def find_sd_weights(folder: str | None = None) -> str | None:
    """A diffusers model folder named in the config, else the Hugging Face cache; None when absent."""
    if folder:
        folder = os.path.expanduser(folder)
        return folder if os.path.exists(os.path.join(folder, "unet")) else None
    index = try_to_load_from_cache(SD_REPO, "model_index.json")
    return os.path.dirname(index) if isinstance(index, str) else None


def folder_digest(folder: str) -> str:
    """Digest of every weight and config file of a model folder, by relative path."""
    h = hashlib.sha256()
    for sub in SUBFOLDERS:
        root = os.path.join(folder, sub)
        for dirpath, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                h.update(f"{os.path.relpath(path, folder)}={file_digest(os.path.realpath(path))};".encode())
    return h.hexdigest()


class _Done(Exception):
    """Raised by the last hooked up-block: the finer blocks are not needed."""


class StableDiffusion(Backbone):
    """SD UNet decoder features on a stride-16 grid, unit norm per level and overall."""

    name = "sd15"
    stride = 16
    image_size = 768
    size_multiple = 64  # VAE /8, then three UNet downsamplings
    mean = (0.5, 0.5, 0.5)  # SD takes pixels in [-1, 1]
    std = (0.5, 0.5, 0.5)

    def __init__(self, folder: str | None = None, timestep: int = 100, seed: int = 0):
        super().__init__()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        path = find_sd_weights(folder)
        if path is None:
            raise WeightsNotFound(
                f"Stable Diffusion weights not found{f' at {folder}' if folder else ''}: on a machine with "
                f"internet run `hf download {SD_REPO}` (fills the Hugging Face cache, HF_HUB_CACHE), or copy "
                "a diffusers model folder (vae/, unet/, text_encoder/, tokenizer/, scheduler/) here and set "
                "backbone.sd_weights=/path/to/folder"
            )
        self.weights = os.path.abspath(path)
        self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
        self.unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
        self.scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        if not 0 <= timestep < self.scheduler.config.num_train_timesteps:
            raise UsageError(f"backbone.sd_timestep={timestep}: use 0..{self.scheduler.config.num_train_timesteps - 1}")
        self.timestep, self.seed = timestep, seed
        self.groups = tuple(reversed(self.unet.config.block_out_channels))[:3]  # the three up-block widths
        self.dim = sum(self.groups)
        self.register_buffer(
            "empty_prompt",
            self._encode_empty_prompt(
                CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
                CLIPTextModel.from_pretrained(path, subfolder="text_encoder"),
            ),
            persistent=False,
        )
        self.eval()

    @staticmethod
    @torch.no_grad()
    def _encode_empty_prompt(tokenizer, text_encoder) -> torch.Tensor:
        """The text condition of "" (1, tokens, width): computed once, the encoder is then dropped."""
        ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        return text_encoder(ids)[0]

    def digest(self) -> str:
        return folder_digest(self.weights)

    def recipe_key(self) -> str:
        return f"t={self.timestep}|seed={self.seed}"

    def sources(self) -> dict:
        return {"sd_weights": self.weights}

    def unet_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three up-block outputs for images in [-1, 1], coarse to fine."""
        latents = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        generator = torch.Generator().manual_seed(self.seed)  # the same noise for every image: reproducible cache
        noise = torch.randn(latents.shape[1:], generator=generator).to(latents)
        t = torch.full((len(x),), self.timestep, dtype=torch.long, device=x.device)
        noisy = self.scheduler.add_noise(latents, noise.expand_as(latents), t)
        outputs = []

        def keep(module, args, output):
            outputs.append(output)
            if len(outputs) == 3:
                raise _Done

        hooks = [block.register_forward_hook(keep) for block in self.unet.up_blocks[:3]]
        try:
            self.unet(noisy, t, encoder_hidden_states=self.empty_prompt.expand(len(x), -1, -1))
        except _Done:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return outputs

    def features(self, x: torch.Tensor, grid) -> torch.Tensor:
        """Levels resampled to `grid`, each unit norm, concatenated and normalised."""
        levels = [
            normalize(F.interpolate(f.float(), size=grid, mode="bilinear", align_corners=False, antialias=True))
            for f in self.unet_features(x)
        ]
        return normalize(torch.cat(levels, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, (x.shape[-2] // self.stride, x.shape[-1] // self.stride))


class StableDiffusionDino(Backbone):
    """The fused descriptor on DINOv2's grid: [DINO, SD] / sqrt(2), both parts unit norm.

    Input is ImageNet-normalised at DINOv2's side (840 px: 60 x 60 patches); the SD
    branch sees the same image rescaled to `sd_image_size` in [-1, 1]."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD
    stride = 14
    size_multiple = 14

    def __init__(self, name: str, dino_weights=None, sd_weights=None, timestep=100, sd_image_size=960):
        super().__init__()
        if name not in FUSED:
            raise UsageError(f"backbone '{name}' is unknown; choose from {sorted(FUSED)}")
        if sd_image_size % StableDiffusion.size_multiple:
            raise UsageError(f"backbone.sd_image_size={sd_image_size}: use a multiple of 64, e.g. 960")
        self.name, self.sd_image_size = name, sd_image_size
        self.dino = DinoV2(FUSED[name], dino_weights)
        self.sd = StableDiffusion(sd_weights, timestep)
        self.image_size = self.dino.image_size
        self.groups = (*self.dino.groups, *self.sd.groups)
        self.dim = sum(self.groups)
        self.weights = self.dino.weights

    def digest(self) -> str:
        return f"{self.dino.digest()}+{self.sd.digest()}"

    def recipe_key(self) -> str:
        return f"{self.sd.recipe_key()}|sd_size={self.sd_image_size}"

    def sources(self) -> dict:
        return {"weights": self.dino.weights, **self.sd.sources()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dino = self.dino(x)
        pixels = (
            x * torch.tensor(self.std, device=x.device)[:, None, None]
            + torch.tensor(self.mean, device=x.device)[:, None, None]
        )
        side = self.sd_image_size
        sd_in = F.interpolate(pixels * 2 - 1, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        sd = self.sd.features(sd_in, dino.shape[-2:])
        return normalize(torch.cat([dino, sd], dim=1))
