"""DINOv2 through timm: patch tokens of the last block before the final norm."""

import os

import torch
from huggingface_hub import try_to_load_from_cache

from ..errors import UsageError
from .base import Backbone, WeightsNotFound, normalize

ARCHS = {
    "dinov2_vits14": ("vit_small_patch14_dinov2.lvd142m", 384),
    "dinov2_vitb14": ("vit_base_patch14_dinov2.lvd142m", 768),
}
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def find_weights(name: str, weights: str | None = None) -> str | None:
    """A local file named in the config, else the Hugging Face cache; None when absent."""
    if weights:
        return weights if os.path.exists(os.path.expanduser(weights)) else None
    arch = ARCHS[name][0]
    for filename in HUB_FILES:
        path = try_to_load_from_cache(f"timm/{arch}", filename)
        if isinstance(path, str) and os.path.exists(path):
            return path
    return None


class DinoV2(Backbone):
    stride = 14
    image_size = 840  # 60 x 60 patches, as published
    size_multiple = 14

    def __init__(self, name: str = "dinov2_vitb14", weights: str | None = None):
        super().__init__()
        if name not in ARCHS:
            raise UsageError(f"backbone '{name}' is unknown; choose from {sorted(ARCHS)}")
        arch, self.dim = ARCHS[name]
        self.name, self.groups = name, (self.dim,)
        path = find_weights(name, weights)
        if path is None:
            raise WeightsNotFound(
                f"{name} weights not found{f' at {weights}' if weights else ''}: on a machine with "
                f"internet run `hf download timm/{arch}` (fills the Hugging Face cache, "
                f"HF_HUB_CACHE), or copy model.safetensors (timm) or the Meta .pth here and set "
                "backbone.weights=/path/to/file"
            )
        import timm  # here: 1.7 s of imports that every --help paid

        self.weights = os.path.abspath(os.path.expanduser(path))
        self.model = timm.create_model(
            arch,
            pretrained=True,
            pretrained_cfg_overlay={"file": self.weights},
            dynamic_img_size=True,
        )
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,) = self.model.forward_intermediates(x, indices=1, norm=False, intermediates_only=True)
        return normalize(tokens)
