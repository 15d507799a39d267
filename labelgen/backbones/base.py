"""What every backbone offers the feature stage: a dense, unit-norm feature grid."""

import hashlib
import os
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MissingInput, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsNotFound(MissingInput):
    """Pretrained weights are not on this machine; the message says where to put them."""


class Backbone(nn.Module):
    """Maps normalised images (B, 3, S, S) to unit-norm features (B, C, S/stride, S/stride).

    Subclasses set `name`, `stride`, `dim`, `groups` (channels of each feature group,
    in order, summing to `dim`: the adapter gives each its own block), `image_size`
    (the default input side, a multiple of `size_multiple`) and `weights` (the file
    the weights came from).
    """

    name: str
    stride: int
    dim: int
    groups: tuple[int, ...]
    image_size: int
    size_multiple: int
    weights: str
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    recipe = "v2"  # bump when the feature definition or the cache format changes: it invalidates caches
    # (v2: a cache file keeps the foreground cells and their context ring, labelgen.features)

    def check_size(self, size: int) -> int:
        if size % self.size_multiple:
            raise UsageError(
                f"backbone.image_size={size} does not suit {self.name}: use a multiple of "
                f"{self.size_multiple}, e.g. {round(size / self.size_multiple) * self.size_multiple}"
            )
        return size

    def digest(self) -> str:
        """Identifies the weights."""
        return file_digest(self.weights)

    def recipe_key(self) -> str:
        """Settings besides the weights that change the features."""
        return ""

    def sources(self) -> dict:
        """Config keys that pin these weights, so every feature actor loads the same ones."""
        return {"weights": self.weights}

    def fingerprint(self, image_size: int, variant: str = "") -> str:
        """Names the features: same fingerprint, same numbers, so caches can be shared.
        `variant` names anything else that changes what is cached (the mask fallback)."""
        recipe = "|".join(filter(None, [self.recipe, self.recipe_key()]))
        key = f"{self.name}|{recipe}|{image_size}|{self.digest()}|{variant}"
        return f"{self.name}-{image_size}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@lru_cache(maxsize=8)
def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return f"{h.hexdigest()}:{os.path.getsize(path)}"


def normalize(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    return F.normalize(x.float(), dim=dim)
