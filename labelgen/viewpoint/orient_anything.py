"""Orient Anything (Wang et al., ICML 2025): an object's 3D orientation from one image.

A DINOv2-L/14 encoder (transformers' Dinov2Model) and an MLP head on its class token give
logits over azimuth (360 one-degree bins), polar angle (180), in-plane rotation (180) and a
two-way "has an orientation" confidence. Weights: `croplargeEX2/dino_weight.pt` of the Hugging
Face repository Viglong/Orient-Anything, one file with the encoder, from the Hugging Face cache
or `pose.weights=/path`; nothing is downloaded at run time. `estimate` gives per image the
azimuth, elevation and in-plane theta in this project's convention (labelgen.geometry.rotation),
the confidence, and the spread (uncertainty) of the azimuth.
"""

import contextlib
import math
import os

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from PIL import Image
from torch import nn
from transformers import Dinov2Config, Dinov2Model
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

from ..backbones.base import IMAGENET_MEAN, IMAGENET_STD, WeightsNotFound

HUB_REPO, HUB_FILE = "Viglong/Orient-Anything", "croplargeEX2/dino_weight.pt"
# facebook/dinov2-large, the encoder their DINOv2_MLP(dino_mode="large") starts from
LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 518, "patch_size": 14}
AZIMUTH_BINS, POLAR_BINS, CONFIDENCE_LOGITS = 360, 180, 2
OUT_DIM = AZIMUTH_BINS + POLAR_BINS + 180 + CONFIDENCE_LOGITS  # croplargeEX2: 180 rotation bins
RESIZE, FILL = 256, 0.85  # their framing: the object spans FILL of a square resized to RESIZE, centre-cropped
# Orient Anything's angles -> this project's (labelgen.geometry.rotation; camera x right, y down):
# azimuth 90 shows the object's left side with its front pointing to the image's left in both, a
# positive polar-minus-90 puts the camera above (the front points down the image) like a positive
# elevation, and their rotation turns the object counter-clockwise on screen where theta turns it
# clockwise. Read off their visualisation (utils.get_proj2D_XYZ, render_3D_axis), not yet checked
# with the real weights on posed images: a check that disagrees changes a sign here, nowhere else.
SIGNS = {"azimuth": 1.0, "elevation": 1.0, "theta": -1.0}
COLUMNS = ["azimuth", "elevation", "theta", "confidence", "spread"]


def find_weights(weights: str | None = None) -> str | None:
    """A local file named in the config, else the Hugging Face cache; None when absent."""
    if weights:
        return weights if os.path.exists(os.path.expanduser(weights)) else None
    path = try_to_load_from_cache(HUB_REPO, HUB_FILE)
    return path if isinstance(path, str) and os.path.exists(path) else None


class LegacyEmbeddings(Dinov2Embeddings):
    """Resamples the 37x37 position embeddings as transformers 4.38 did (a scale factor of
    (n + 0.1) / 37, not the size n): their pinned version, so the weights see what they were
    trained with; newer transformers shift the embeddings slightly at 224 px."""

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        side = math.isqrt(self.position_embeddings.shape[1] - 1)
        h, w = height // self.patch_size, width // self.patch_size
        if h == w == side:
            return self.position_embeddings
        grid = self.position_embeddings[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid.float(), scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic", align_corners=False
        )
        grid = grid.to(self.position_embeddings.dtype).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([self.position_embeddings[:, :1], grid], dim=1)


# transformers 5 names DINOv2's attention projections q/k/v/o_proj; the published file (transformers
# 4.38) has the older names. Keys relative to an attention module: this module's -> the file's.
RENAMES = {
    "q_proj.": "attention.query.",
    "k_proj.": "attention.key.",
    "v_proj.": "attention.value.",
    "o_proj.": "output.dense.",
}


def _rename(state_dict: dict, prefix: str, pairs) -> None:
    for old, new in pairs:
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)


def encoder(config: Dinov2Config) -> Dinov2Model:
    """transformers' DINOv2 whose state dict reads and writes the published key names."""
    model = Dinov2Model(config)
    legacy = LegacyEmbeddings(config)
    legacy.load_state_dict(model.embeddings.state_dict(), assign=True)
    model.embeddings = legacy
    for layer in model.encoder.layer:
        if hasattr(layer.attention, "q_proj"):
            layer.attention.register_state_dict_post_hook(
                lambda m, sd, prefix, meta: _rename(sd, prefix, RENAMES.items())
            )
            layer.attention.register_load_state_dict_pre_hook(
                lambda m, sd, prefix, *args: _rename(sd, prefix, [(v, k) for k, v in RENAMES.items()])
            )
    return model


class Head(nn.Module):
    """Their MLP_dim: two Linear + BatchNorm1d blocks with a ReLU between (names as published)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net1 = nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))
        self.net2 = nn.Sequential(nn.Linear(out_dim, out_dim), nn.BatchNorm1d(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net2(self.net1(x))


def read_state(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class OrientAnything(nn.Module):
    """Normalised images (B, 3, S, S) -> logits (B, OUT_DIM): azimuth, polar, rotation, confidence.

    Submodules `dinov2` and `down_sampler` as in their DINOv2_MLP, so their file loads with
    strict=True. `config` (a smaller Dinov2Config) is for tests only.
    """

    name = "orient-anything"
    image_size = 224  # their processor (facebook/dinov2-large): shortest edge 256, centre crop 224
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, weights: str | None = None, pretrained: bool = True, config: Dinov2Config | None = None):
        super().__init__()
        path = find_weights(weights) if pretrained else None
        if pretrained and path is None:
            raise WeightsNotFound(
                f"Orient Anything weights not found{f' at {weights}' if weights else ''}: on a machine with "
                f"internet run `hf download {HUB_REPO} {HUB_FILE}` (fills the Hugging Face cache, "
                "HF_HUB_CACHE), or copy dino_weight.pt here and set pose.weights=/path/to/dino_weight.pt"
            )
        config = config or Dinov2Config(**LARGE)
        with torch.device("meta") if path else contextlib.nullcontext():  # the file replaces every tensor
            self.dinov2 = encoder(config)
            self.down_sampler = Head(config.hidden_size, OUT_DIM)
        self.weights = None
        if path:
            self.weights = os.path.abspath(os.path.expanduser(path))
            try:
                self.load_state_dict(read_state(self.weights), strict=True, assign=True)
            except RuntimeError as e:
                raise ValueError(
                    f"{self.weights} is not an Orient Anything checkpoint ({HUB_REPO} {HUB_FILE}): {e}"
                ) from e
            self.float()
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_sampler(self.dinov2(pixel_values=x).last_hidden_state[:, 0])

    def preprocess(self, images: list[np.ndarray], boxes=None, masks=None) -> torch.Tensor:
        """(B, 3, S, S) normalised, framed as their demo does after background removal: the box
        (x1, y1, x2, y2 pixels; default: the mask's bounds, else the whole image) cut out, padded
        black to a centred square, that padded so the object spans FILL of it, resized (PIL
        bicubic) to RESIZE and centre-cropped to S. A mask blacks out the background as their
        rembg step does."""
        boxes = [None] * len(images) if boxes is None else list(boxes)
        masks = [None] * len(images) if masks is None else list(masks)
        if not len(images) == len(boxes) == len(masks):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes and {len(masks)} masks")
        framed = np.stack([frame(im, box, mask) for im, box, mask in zip(images, boxes, masks)])
        x = torch.from_numpy(framed).permute(0, 3, 1, 2)
        o = (RESIZE - self.image_size) // 2
        x = x[:, :, o : o + self.image_size, o : o + self.image_size].float() / 255
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)


def frame(image: np.ndarray, box=None, mask: np.ndarray | None = None) -> np.ndarray:
    """(RESIZE, RESIZE, 3) uint8: the box's content framed as in their resize_foreground."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"images must be (H, W, 3) uint8 RGB arrays, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != (h, w):
            raise ValueError(f"a mask of shape {m.shape} does not fit a {w}x{h} image")
        image = (image * m[..., None] + 0.5).astype(np.uint8)
        if box is None and (m > 0).any():
            rows, cols = np.nonzero(m > 0)
            box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    x1, y1, x2, y2 = (0, 0, w, h) if box is None else box
    x1, y1 = max(0, math.floor(x1)), max(0, math.floor(y1))
    x2, y2 = min(w, math.ceil(x2)), min(h, math.ceil(y2))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {tuple(box)} holds no pixel of a {w}x{h} image")
    ch, cw = y2 - y1, x2 - x1
    side = max(ch, cw)
    out = int(side / FILL)
    canvas = np.zeros((out, out, 3), np.uint8)
    top, left = (side - ch) // 2 + (out - side) // 2, (side - cw) // 2 + (out - side) // 2
    canvas[top : top + ch, left : left + cw] = image[y1:y2, x1:x2]
    return np.asarray(Image.fromarray(canvas).resize((RESIZE, RESIZE), Image.BICUBIC))


def decode(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B,) each, degrees in this project's convention (SIGNS): azimuth in [-180, 180), elevation,
    theta; confidence in [0, 1]; spread, the circular standard deviation of the azimuth distribution.

    As their get_3angle: each angle is its block's argmax (bin i: azimuth i, polar i - 90, rotation
    i - half the rotation bins, so any of their layouts decodes), the confidence the first of the
    softmax over the last two logits."""
    logits = logits.float()
    rotation_bins = logits.shape[1] - AZIMUTH_BINS - POLAR_BINS - CONFIDENCE_LOGITS
    if rotation_bins <= 0:
        raise ValueError(f"{logits.shape[1]} logits are too few for Orient Anything's layout ({OUT_DIM})")
    az, polar, rot, conf = logits.split([AZIMUTH_BINS, POLAR_BINS, rotation_bins, CONFIDENCE_LOGITS], dim=1)
    azimuth = az.argmax(1).float() * SIGNS["azimuth"]
    p = az.softmax(1)
    angles = torch.deg2rad(torch.arange(AZIMUTH_BINS, device=logits.device, dtype=torch.float32))
    resultant = torch.hypot(p @ angles.cos(), p @ angles.sin()).clamp(1e-12, 1.0)
    return {
        "azimuth": (azimuth + 180.0) % 360.0 - 180.0,
        "elevation": (polar.argmax(1).float() - POLAR_BINS // 2) * SIGNS["elevation"],
        "theta": (rot.argmax(1).float() - rotation_bins // 2) * SIGNS["theta"],
        "confidence": conf.softmax(1)[:, 0],
        "spread": torch.rad2deg(torch.sqrt(-2.0 * torch.log(resultant))),
    }


def estimate(model: OrientAnything, images, boxes=None, batch_size: int = 32, device=None, masks=None) -> pd.DataFrame:
    """One row per image (in order): azimuth, elevation, theta, confidence, spread."""
    from ..features import autocast

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    images = list(images)
    boxes = [None] * len(images) if boxes is None else list(boxes)
    masks = [None] * len(images) if masks is None else list(masks)
    parts = []
    with torch.inference_mode(), autocast(device):
        for s in range(0, len(images), batch_size):
            x = model.preprocess(images[s : s + batch_size], boxes[s : s + batch_size], masks[s : s + batch_size])
            parts.append({k: v.cpu() for k, v in decode(model(x.to(device))).items()})
    return pd.DataFrame({c: torch.cat([p[c] for p in parts]).numpy() if parts else np.zeros(0) for c in COLUMNS})
