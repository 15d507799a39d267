"""The adapter (DIY-SC / GeoAware-SC): a bottleneck block per feature group, mixed by
softmax weights, on top of the frozen backbone's cached features."""

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    """1x1 to P/4, 3x3, 1x1 to P, GroupNorm and ReLU between; the shortcut projects
    only when the channel count changes (DINO-only, P = 768: about 0.63M parameters)."""

    def __init__(self, cin: int, cout: int, groups: int = 32):
        super().__init__()
        mid = max(1, cout // 4)

        def gn(c):
            return nn.GroupNorm(min(groups, c) if c % min(groups, c) == 0 else 1, c)

        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), gn(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), gn(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), gn(cout),
        )
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), gn(cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class Adapter(nn.Module):
    """(B, sum(groups), h, w) backbone features -> (B, P, h, w) unit-norm features."""

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


def save_adapter(adapter: Adapter, path: str, extra: dict | None = None) -> None:
    torch.save({"config": adapter.config(), "state_dict": adapter.state_dict(), **(extra or {})}, path)


def load_adapter(path_or_bytes) -> Adapter:
    """Load with weights_only=True: a checkpoint can hold tensors and plain data, never code."""
    blob = torch.load(path_or_bytes, map_location="cpu", weights_only=True)
    adapter = Adapter(**blob["config"])
    adapter.load_state_dict(blob["state_dict"])
    return adapter.eval()
