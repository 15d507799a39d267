"""The two small networks on top of the frozen backbone's features, shared by labelling and
training: the adapter (DIY-SC / GeoAware-SC) and the spherical mapper (Spherical Maps), and
the one checkpoint format both are stored in."""

import io

import torch
import torch.nn.functional as F
from torch import nn

from .io import read_bytes


class Bottleneck(nn.Module):
    """1x1 to P/4, 3x3, 1x1 to P, GroupNorm and ReLU between; the shortcut projects
    only when the channel count changes (DINO-only, P = 768: about 0.63M parameters)."""

    def __init__(self, cin: int, cout: int, groups: int = 32):
        super().__init__()
        mid = max(1, cout // 4)

        def gn(c):
            return nn.GroupNorm(min(groups, c) if c % min(groups, c) == 0 else 1, c)

        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            gn(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            gn(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False),
            gn(cout),
        )
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), gn(cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class Adapter(nn.Module):
    """(B, sum(groups), h, w) backbone features -> (B, P, h, w) unit-norm features: a
    bottleneck block per feature group, mixed by softmax weights."""

    def __init__(self, groups: list[int], out_dim: int | None = None, dropout: float = 0.2):
        super().__init__()
        self.groups = list(groups)
        self.out_dim = out_dim or sum(groups)
        self.blocks = nn.ModuleList(Bottleneck(c, self.out_dim) for c in self.groups)
        self.mix = nn.Parameter(torch.zeros(len(self.groups)))
        self.dropout = nn.Dropout2d(dropout)
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1 / 0.07)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        parts = torch.split(x, self.groups, dim=1)
        w = self.mix.softmax(0)
        out = sum(wi * block(p) for wi, block, p in zip(w, self.blocks, parts))
        return F.normalize(out, dim=1)

    def config(self) -> dict:
        return {"groups": self.groups, "out_dim": self.out_dim, "dropout": self.dropout.p}


class SphereMapper(nn.Module):
    """(B, N, C) patch features -> (B, N, 3) points on the unit sphere: a linear layer, one
    transformer block over the image's patches, a linear layer to 3-D (about 2M parameters
    at 768-d input); a category-conditioned prototype maps points back to features."""

    def __init__(self, in_dim: int, categories: list[str], dim: int = 384, heads: int = 6):
        super().__init__()
        self.categories = list(categories)
        self.inp = nn.Linear(in_dim, dim)
        self.block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.out = nn.Linear(dim, 3)
        self.category = nn.Embedding(len(self.categories), 64)
        self.prototype = nn.Sequential(nn.Linear(3 + 64, dim), nn.ReLU(), nn.Linear(dim, in_dim))

    def forward(self, feats: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, C) patch features (`pad` (B, N) True where padding) -> (B, N, 3) unit vectors."""
        return F.normalize(self.out(self.block(self.inp(feats), src_key_padding_mask=pad)), dim=-1)

    def reconstruct(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) sphere points of images of `category` (B,) -> (B, N, C) prototype features."""
        cat = self.category(category)[:, None].expand(-1, points.shape[1], -1)
        return self.prototype(torch.cat([points, cat], dim=-1))

    def config(self) -> dict:
        return {
            "in_dim": self.inp.in_features,
            "categories": self.categories,
            "dim": self.inp.out_features,
            "heads": self.block.self_attn.num_heads,
        }


def checkpoint_bytes(model: nn.Module, **extra) -> bytes:
    """A model as bytes: its config (the constructor's arguments), weights and `extra` data."""
    buf = io.BytesIO()
    torch.save({"config": model.config(), "state_dict": model.state_dict(), **extra}, buf)
    return buf.getvalue()


def load_checkpoint(cls: type[nn.Module], source: bytes | str) -> nn.Module:
    """A model of class `cls` from checkpoint bytes or a file's URI, in eval mode. Loaded with
    weights_only=True: a checkpoint can hold tensors and plain data, never code."""
    data = read_bytes(source) if isinstance(source, str) else source
    blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = cls(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.eval()
