"""Backbones by name; `auto` takes DINOv2 when its weights are here, else the offline one."""

import logging
from dataclasses import dataclass

from ..config import Location
from ..errors import UsageError
from .base import Backbone, WeightsNotFound
from .dinov2 import ARCHS as DINO_ARCHS
from .dinov2 import DinoV2, find_weights
from .mobilenet import MobileNetV2
from .stable_diffusion import FUSED, SD_LEVELS, StableDiffusion, StableDiffusionDino
from .stable_diffusion import NAMES as SD_NAMES

log = logging.getLogger(__name__)


@dataclass
class BackboneConf:
    name: str = "auto"  # auto | mobilenetv2 | dinov2_vits14 | dinov2_vitb14 | sd15 | sd15_dinov2_vit{s,b}14
    weights: Location | None = None  # a local file; default: the package / Hugging Face cache
    image_size: int | None = None  # input side after padding to a square; default: the backbone's
    auto_prefers: str = "dinov2_vitb14"  # what auto takes when its weights are found
    sd_weights: Location | None = None  # a diffusers Stable Diffusion folder; default: the Hugging Face cache
    sd_timestep: int = 100  # noise level the UNet sees (of 1000)
    sd_image_size: int = 960  # SD branch input side of the fused backbones


default_conf = BackboneConf

NAMES = ["auto", "mobilenetv2", *DINO_ARCHS, *SD_NAMES]


def feature_groups(name: str) -> list[int]:
    """Channels per feature group of a backbone's cached features, without loading it
    (Stable Diffusion: the up-block widths of SD 1.x / 2.x)."""
    if name == "mobilenetv2":
        return list(MobileNetV2.groups)
    if name == "sd15":
        return list(SD_LEVELS)
    if name in FUSED:
        return [DINO_ARCHS[FUSED[name]][1], *SD_LEVELS]
    return [DINO_ARCHS[name][1]]


def resolve_name(conf) -> tuple[str, str]:
    """The concrete backbone and why it was chosen."""
    if conf.name != "auto":
        if conf.name not in NAMES:
            raise UsageError(f"backbone.name='{conf.name}' is unknown; choose from {NAMES}")
        return conf.name, "asked for"
    for name in dict.fromkeys([conf.auto_prefers, *DINO_ARCHS]):
        if find_weights(name, conf.weights) is not None:
            return name, f"auto: {name} weights found"
    return "mobilenetv2", "auto: no DINOv2 weights found, using the offline MobileNetV2"


def build_backbone(conf) -> tuple[Backbone, str]:
    name, reason = resolve_name(conf)
    if name == "mobilenetv2":
        weights = None if conf.name == "auto" else conf.weights
        return MobileNetV2(weights), reason
    if name == "sd15":
        return StableDiffusion(conf.sd_weights, conf.sd_timestep), reason
    if name in FUSED:
        return StableDiffusionDino(name, conf.weights, conf.sd_weights, conf.sd_timestep, conf.sd_image_size), reason
    return DinoV2(name, conf.weights), reason


__all__ = ["Backbone", "WeightsNotFound", "build_backbone", "feature_groups", "resolve_name", "default_conf", "NAMES"]
