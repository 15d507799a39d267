"""Feature extraction against the FLOP-bound limit of this machine.

The bound: the backbone's FLOPs per image (counted by torch's FlopCounterMode:
2 per multiply-add of every conv and matmul) at the machine's dense matmul rate
(a large float32 GEMM on the same threads). The backbone rate is measured on
batches already in memory; the actor rate adds decoding, the mirrored twin,
the PCA mask and the float16 cache write.
"""

import time

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode


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
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, dynamic_img_size=True).eval()
    rows = []
    for name, model, side, cl in [
        ("mobilenetv2", offline, size, False),
        ("mobilenetv2, channels-last (as the actors run it)", offline, size, True),
        ("dinov2 ViT-S/14 @448", vit, 448, False),
    ]:
        flops = flops_per_image(model, side)
        rate = backbone_rate(model, side, batch, cl)
        rows.append({"model": name, "gflops_per_image": flops / 1e9, "images_per_s": rate,
                     "bound_images_per_s": peak / flops, "of_bound": rate * flops / peak})
    return rows
