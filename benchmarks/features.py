"""Feature extraction against the FLOP-bound limit of this machine.

The bound: the backbone's FLOPs per image (counted by torch's FlopCounterMode:
2 per multiply-add of every conv and matmul) at the machine's dense matmul rate
(a large float32 GEMM on the same threads). The backbone rate is measured on
batches already in memory; the actor rate adds decoding, the mirrored twin,
the PCA mask and the float16 cache write.

The cache: bytes per image of its files (the foreground cells and their context ring)
against the full float16 grid the cache held before, on a collection's real files and
on a DINOv2-B shaped grid.
"""

import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.numpy import save as st_save
from torch.utils.flop_counter import FlopCounterMode

from labelgen.features import FLIPPED, FeatureCache, ImageFeatures


def best_rate(fn, work: float, reps: int = 5) -> float:
    """work / seconds of the fastest of `reps` calls, after one warm-up call."""
    fn()
    best = min(_timed(fn) for _ in range(reps))
    return work / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_flops(n: int = 2048) -> float:
    """The machine's dense float32 matmul rate on torch's current threads, FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return best_rate(lambda: a @ b, 2 * n**3)


def flops_per_image(model, size: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops()


@torch.inference_mode()
def backbone_rate(model, size: int, batch: int, channels_last: bool = False) -> float:
    """Images/s of the forward pass alone."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model, x = model.to(memory_format=layout), torch.randn(batch, 3, size, size).to(memory_format=layout)
    return best_rate(lambda: model(x), batch, reps=5)


def bench_backbones(offline, size: int, batch: int, peak: float) -> list[dict]:
    """The offline MobileNetV2 (as the actor runs it, and channels-last) and a DINOv2 ViT-S/14
    (random weights: the FLOPs and the speed are the pretrained model's) at 448 px."""
    import timm  # here, not for --help

    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, dynamic_img_size=True).eval()
    rows = []
    for name, model, side, cl in [
        ("mobilenetv2", offline, size, False),
        ("mobilenetv2, channels-last (as the actors run it)", offline, size, True),
        ("dinov2 ViT-S/14 @448", vit, 448, False),
    ]:
        flops = flops_per_image(model, side)
        rate = backbone_rate(model, side, batch, cl)
        rows.append(
            {
                "model": name,
                "gflops_per_image": flops / 1e9,
                "images_per_s": rate,
                "bound_images_per_s": peak / flops,
                "of_bound": rate * flops / peak,
            }
        )
    return rows


def full_grid_bytes(f: ImageFeatures) -> int:
    """The file the cache wrote before: the (h, w, C) float16 grid, the fg map, the same metadata."""
    h, w = f.fg.shape
    tensors = {"feats": np.zeros((h, w, f.feats.shape[1]), np.float16), "fg": np.zeros((h, w), np.uint8)}
    meta = {"scale": repr(f.scale), "stride": str(f.stride), "width": str(f.width), "height": str(f.height)}
    return len(st_save(tensors, metadata=meta))


def bench_cache(features: FeatureCache, image_ids, flips: bool = True) -> dict:
    """Bytes per cached view of a collection's files against the full-grid files, and the
    share of the grid that is foreground and that is stored."""
    ids = [v for i in image_ids for v in ([i, i + FLIPPED] if flips else [i])]
    sizes, full, fg, stored = [], [], [], []
    for i in ids:
        uri, f = features.uri(i), features.load(i)
        sizes.append(os.path.getsize(uri))
        full.append(full_grid_bytes(f))
        fg.append(float(f.fg.float().mean()))
        stored.append(float(f.stored.float().mean()))
    return {
        "views": len(ids),
        "grid": tuple(f.fg.shape),
        "dim": f.feats.shape[1],
        "bytes": float(np.mean(sizes)),
        "full_bytes": float(np.mean(full)),
        "fraction": float(np.sum(sizes) / np.sum(full)),
        "fg_fraction": float(np.mean(fg)),
        "stored_fraction": float(np.mean(stored)),
    }


def ellipse(side: int, fraction: float, aspect: float = 1.3) -> torch.Tensor:
    """(side, side) bool: a centred filled ellipse covering about `fraction` of the grid."""
    b = math.sqrt(fraction * side * side / (math.pi * aspect))
    ys, xs = torch.meshgrid(torch.arange(side) + 0.5 - side / 2, torch.arange(side) + 0.5 - side / 2, indexing="ij")
    return (xs / (aspect * b)) ** 2 + (ys / b) ** 2 <= 1


def cache_cut_dinov2(fg_fraction: float, side: int = 60, dim: int = 768) -> dict:
    """Bytes per view of a DINOv2-B grid at 840 px (60 x 60, 768-d): the full float16 grid
    against the cache's file, for an object covering `fg_fraction` of the grid (measured on
    a collection by `bench_cache`)."""
    fg = ellipse(side, fg_fraction)
    f = ImageFeatures(torch.randn(side, side, dim).to(torch.float16), fg, scale=1.0, stride=14, width=840, height=840)
    with tempfile.TemporaryDirectory() as root:
        cache = FeatureCache(root, "fp")
        cache.save("view", f)
        uri = cache.uri("view")
        size = os.path.getsize(uri)
    full = full_grid_bytes(f)
    return {
        "grid": (side, side),
        "dim": dim,
        "fg_fraction": float(fg.float().mean()),
        "stored_fraction": float(f.stored.float().mean()),
        "full_bytes": full,
        "bytes": size,
        "fraction": size / full,
    }


if __name__ == "__main__":
    from benchmarks import library_main

    sys.exit(library_main(__spec__.name, __doc__))
