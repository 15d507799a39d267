"""Dense features per image: preprocessing, the feature cache, and the Ray Data stage.

An image is padded (right and bottom) to a square and resized to the backbone's
input side, so a feature cell (row, col) covers original pixels
((col + 0.5) * stride / scale, (row + 0.5) * stride / scale). A cell is foreground
when at least half of it lies on the mask: given, or estimated in the actor by a model made for
it (labelgen.foreground), its masks cached beside the features.

The cache (FeatureCache, what every stage reads through) keeps only what is read of
an image: the foreground cells (the chains match them) and a ring of CONTEXT cells
around them (the adapter's 3x3 conv reads a foreground cell's neighbours), float16,
with the global descriptor of the full grid and the pixel frame. A cache file is
found by the image id and holds the version (size and modification time) of the image
and mask files it was computed from: an image replaced under the same id no longer
matches its cached features, which are computed again.
"""

import ctypes
import hashlib
import io as _io
import json
import logging
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import islice

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .backbones.base import IMAGENET_MEAN
from .config import Location
from .console import Progress, quiet_ray_data
from .io import Fault, join, list_files, read_bytes, read_head, versions, write_bytes
from .manifest import BOX

log = logging.getLogger(__name__)


@dataclass
class FeaturesConf:
    batch_size: int | None = None  # images per actor call; default: 32 on a GPU (x2 with flips), 8 on the CPU
    actors: int | None = None  # default: one per GPU, else one per 2 x `cpus_per_actor` CPUs (at least 1): the rest
    # reads
    cpus_per_actor: float = 1.0  # fractional leaves room for Ray Data's read tasks on small nodes
    threads: int | None = None  # torch threads per CPU actor; default: the node's cores / actors
    micro_batch: int | None = None  # views per forward; default: 32 on a GPU (the thread pool decodes the next one and
    # writes the last beside it), the whole batch on the CPU (in parts it ran slower on 2 cores: the cores are busy)
    device: str = "auto"  # auto (GPU when the cluster has one) | cpu | cuda
    cache: Location | None = None  # feature cache URI; default: <store>/features
    flips: bool = True  # also cache features of the mirrored image (flip augmentation, pose alignment)
    attempts: int = 3  # a lost actor ends the pass; the next pass computes what is not cached yet


default_conf = FeaturesConf
FLIPPED = "#flipped"  # cache id suffix of an image's mirrored twin: x -> width - x
CONTEXT = 1  # rings of cells kept around the foreground: the adapter's 3x3 conv reads one


@dataclass
class ImageFeatures:
    """One image's cached features: the stored cells (the foreground and its context ring),
    the global descriptor, and the pixel frame.

    Given a full (h, w, C) grid as `feats` (and no `stored`), it keeps the stored cells
    and takes the descriptor from the whole grid, as the cache does.
    """

    feats: torch.Tensor  # (M, C) the stored cells, row-major (float16 from the cache)
    fg: torch.Tensor  # (h, w) bool
    scale: float  # input pixels per original pixel
    stride: int  # input pixels per cell
    width: int
    height: int
    stored: torch.Tensor | None = None  # (h, w) bool: the cells `feats` holds, the foreground among them
    desc: torch.Tensor | None = None  # (C,) the global descriptor
    content: str = ""  # the version (io.versions) of the image and mask files they were computed from

    def __post_init__(self):
        if self.stored is None:
            self.desc = grid_descriptor(self.feats, self.fg)
            self.stored = dilate(self.fg, CONTEXT)
            self.feats = self.feats[self.stored]

    def to_bytes(self) -> bytes:
        """A cache file: the stored cells as float16, which they are in a (h, w) uint8 map
        (0 absent, 1 context, 2 foreground), the descriptor, and the pixel frame as metadata."""
        tensors = {
            "feats": self.feats.to(torch.float16).contiguous().numpy(),
            "cells": (self.stored.to(torch.uint8) + self.fg.to(torch.uint8)).numpy(),
            "descriptor": self.desc.float().numpy(),
        }
        meta = {
            "scale": repr(self.scale),
            "stride": str(self.stride),
            "width": str(self.width),
            "height": str(self.height),
            "content": self.content,
        }
        return st_save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ImageFeatures":
        tensors, meta = st_load(data), _metadata(data)
        cells = torch.from_numpy(tensors["cells"])
        return cls(
            feats=torch.from_numpy(tensors["feats"]),
            fg=cells == 2,
            scale=float(meta["scale"]),
            stride=int(meta["stride"]),
            width=int(meta["width"]),
            height=int(meta["height"]),
            stored=cells > 0,
            desc=torch.from_numpy(tensors["descriptor"]),
            content=meta.get("content", ""),
        )

    def fg_index(self) -> torch.Tensor:
        """Flat cell indices of the foreground, row-major."""
        return self.fg.flatten().nonzero().squeeze(1)

    def fg_feats(self) -> torch.Tensor:
        """(N, C) float32 features of the foreground cells, row-major (what the chains match)."""
        return self.feats[self.fg[self.stored]].float()

    def grid(self) -> torch.Tensor:
        """The (h, w, C) grid with zeros in the cells not stored (what the adapter reads)."""
        out = self.feats.new_zeros(*self.fg.shape, self.feats.shape[1])
        out[self.stored] = self.feats
        return out

    def cell_xy(self, index: torch.Tensor) -> torch.Tensor:
        """Grid (col, row) of flat cell indices, as float."""
        w = self.fg.shape[1]
        return torch.stack([index % w, index // w], dim=1).float()

    def to_pixels(self, xy: torch.Tensor) -> torch.Tensor:
        """Grid coordinates to original-image pixels (cell centres)."""
        return (xy + 0.5) * self.stride / self.scale

    def to_grid(self, xy: torch.Tensor) -> torch.Tensor:
        """Original-image pixels to grid coordinates (cell centres at integers): to_pixels undone."""
        return xy * self.scale / self.stride - 0.5

    def on_foreground(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool: which original-image pixels lie in a foreground cell."""
        col, row = np.floor(np.asarray(xy) * self.scale / self.stride).astype(int).T
        h, w = self.fg.shape
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        inside[inside] = self.fg.numpy()[row[inside], col[inside]]
        return inside

    def descriptor(self) -> np.ndarray:
        """A global descriptor: the unit mean of the foreground features (all, without any),
        taken from the full grid when it was cached."""
        return self.desc.numpy()

    @property
    def cell_px(self) -> float:
        """One grid unit in original pixels."""
        return self.stride / self.scale


def grid_descriptor(grid: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """The unit mean of a (h, w, C) grid's foreground features (all of them, without any):
    taken from the full grid, so images without foreground still pair by similarity."""
    cells = grid[fg] if fg.any() else grid.flatten(0, 1)
    return F.normalize(cells.float().mean(0), dim=0)


def dilate(fg: torch.Tensor, rings: int) -> torch.Tensor:
    """(h, w) bool: the cells within `rings` cells (8-neighbourhood steps) of `fg`."""
    return F.max_pool2d(fg[None].float(), 2 * rings + 1, stride=1, padding=rings)[0].bool()


class BadInput(ValueError):
    """An image or mask that cannot be used; the message names the file and the cause."""


def open_image(uri: str) -> Image.Image:
    """The decoded image at `uri`, or BadInput saying in words why not."""
    try:
        data = read_bytes(uri)
    except FileNotFoundError:
        raise BadInput(f"{uri}: no such file") from None
    if not data:
        raise BadInput(f"{uri}: empty file (0 bytes)")
    try:
        image = Image.open(_io.BytesIO(data))
        image.load()
    except Image.UnidentifiedImageError:
        raise BadInput(f"{uri}: not an image format Pillow can read ({len(data):,} bytes)") from None
    except Image.DecompressionBombError as e:
        raise BadInput(f"{uri}: too large to decode safely: {e}") from None
    except OSError as e:
        raise BadInput(f"{uri}: broken or truncated image data ({e})") from None
    return image


def load_image(uri: str, mode: str = "RGB") -> Image.Image:
    """Any PIL image as 8-bit `mode`: 16-bit and float images are scaled, not clipped;
    transparent pixels become the mean grey the padding has."""
    image = open_image(uri)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        x = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or x.max() > 255 else 255.0
        image = Image.fromarray(np.clip(x / top * 255.0, 0, 255).astype(np.uint8), "L")
    if mode == "RGB" and (image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)):
        grey = Image.new("RGBA", image.size, tuple(round(255 * m) for m in IMAGENET_MEAN) + (255,))
        image = Image.alpha_composite(grey, image.convert("RGBA"))
    return image.convert(mode)


def preprocess(image: Image.Image, mask: Image.Image | None, size: int, stride: int, mean, std):
    """Pad to a square, resize, normalise; pool the mask to the feature grid.

    Returns (input (3, size, size), foreground (size/stride, size/stride) bool, scale).
    """
    pixels, area, scale = fit(image, mask, size)
    x, fg = model_input(pixels, area, size, stride, mean, std)
    return torch.from_numpy(x).permute(2, 0, 1), fg, scale


def fit(image: Image.Image, mask: Image.Image | None, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The image resized to fit a size x size square: (pixels (nh, nw, 3) uint8, area (nh, nw)
    float32: the mask's cover of each pixel, ones without a mask, scale). Mirroring these
    is mirroring the image: PIL's resampling is symmetric."""
    w, h = image.size
    if mask is not None and mask.size != (w, h):
        raise ValueError(f"mask is {mask.size[0]}x{mask.size[1]} but the image is {w}x{h}")
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    pixels = np.asarray(image.resize((nw, nh), Image.BICUBIC))
    if mask is None:
        return pixels, np.ones((nh, nw), np.float32), scale
    return pixels, np.asarray(mask.resize((nw, nh), Image.BILINEAR), dtype=np.float32) / 255.0, scale


def model_input(
    pixels: np.ndarray, area: np.ndarray, size: int, stride: int, mean, std
) -> tuple[np.ndarray, torch.Tensor]:
    """Pad right and bottom to the square, normalise (numpy: no torch threads beside the
    forward); pool the area to the grid. Returns (input (size, size, 3) float32, foreground)."""
    nh, nw = area.shape
    x = np.zeros((size, size, 3), np.float32)  # zero after normalisation: the mean colour
    # each channel's 256 values normalised once, then looked up: 2x faster than per pixel, the same floats
    lut = (np.arange(256, dtype=np.float32)[:, None] / 255.0 - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )
    for c in range(3):
        x[:nh, :nw, c] = lut[pixels[..., c], c]
    cover = torch.zeros(size, size)
    cover[:nh, :nw] = torch.from_numpy(np.ascontiguousarray(area))
    return x, F.avg_pool2d(cover[None, None], stride)[0, 0] >= 0.5


def pca_foreground(feats: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Foreground without a mask: the sign of the first principal component of the image's
    features, oriented so that the centre of the image is foreground (objects are framed
    there), kept inside the image. (C, h, w), (h, w) -> (h, w) bool."""
    x = feats.flatten(1).T[inside.flatten()].float()
    if len(x) < 2:
        return inside.clone()
    x = x - x.mean(0)
    # the top eigenvector of the (C, C) scatter, not an SVD of the (N, C) features: 3x cheaper
    # (MobileNetV2 at 320 px), the same foreground on all 1128 demo and objects views tried
    pc = torch.linalg.eigh(x.T @ x).eigenvectors[:, -1]
    proj = torch.zeros(inside.numel())
    proj[inside.flatten()] = x @ pc
    proj = proj.reshape(inside.shape)
    h, w = inside.shape
    centre = proj[h // 4 : h - h // 4, w // 4 : w - w // 4]
    if centre.mean() < 0:
        proj = -proj
    return inside & (proj > 0)


@dataclass(frozen=True)
class FeatureCache:
    """The cached features of one setting (a backbone at an input size and mask fallback,
    or an adapter's refinement of them): a file per image id and per mirrored twin
    (`id + FLIPPED`) under root/fingerprint/. Two plain strings: it travels to Ray tasks
    and Train workers."""

    root: str
    fingerprint: str

    @property
    def folder(self) -> str:
        """Its files; what is learned from these features is kept here too (viewpoint heads)."""
        return join(self.root, self.fingerprint)

    def uri(self, image_id: str) -> str:
        h = hashlib.sha1(image_id.encode()).hexdigest()
        return join(self.folder, h[:2], f"{h}.safetensors")

    def save(self, image_id: str, f: ImageFeatures):
        write_bytes(self.uri(image_id), f.to_bytes())

    def load(self, image_id: str, read=read_bytes) -> ImageFeatures:
        """An image's features; `read` (uri -> bytes) may serve them from a node's copy (node_copy)."""
        return ImageFeatures.from_bytes(read(self.uri(image_id)))

    def _content(self, image_id: str) -> str:
        """The `content` an image's features were computed from, read from its file's header alone."""
        uri = self.uri(image_id)
        head = read_head(uri, 4096)
        length = 8 + int.from_bytes(head[:8], "little")
        return _metadata(head if len(head) >= length else read_head(uri, length)).get("content", "")

    def versions(self, image_ids, flips: bool = False) -> dict[str, str]:
        """image id -> the content its features were computed from ("" in a cache of an older
        labelgen), for the images cached (with their mirrored twin's): one listing, then the
        header of each file present."""
        present = {os.path.basename(p) for p in list_files(self.folder) if p.endswith(".safetensors")}

        def have(i):
            return os.path.basename(self.uri(i)) in present

        ids = [i for i in image_ids if have(i) and (not flips or have(i + FLIPPED))]
        with ThreadPoolExecutor(16) as pool:
            return dict(zip(ids, pool.map(self._content, ids)))

    def stale(self, df: pd.DataFrame, flips: bool = False) -> pd.DataFrame:
        """The rows of `df` (with `content`: the files' versions now) whose features are not
        cached for that version, with `cached`: the version they were cached for (None if
        absent, "" if unknown)."""
        have = self.versions(df["image_id"], flips)
        cached = pd.Series([have.get(i) for i in df["image_id"]], index=df.index, dtype=object)
        return df.assign(cached=cached)[cached.ne(df["content"])]

    def refined(self, model: dict | None) -> "FeatureCache":
        """The cache of adapter `model`'s refinement of these features (None: these): its
        fingerprint carries a digest of the weights, so two models under one id (two stores
        sharing a cache, a hand-given model_id) never read each other's."""
        if model is None:
            return self
        return replace(
            self, fingerprint=f"{self.fingerprint}+adapter-{model['model_id']}-{_weights_digest(model['checkpoint'])}"
        )


@lru_cache(maxsize=64)
def _weights_digest(checkpoint: str) -> str:
    """The first 8 hex digits of the SHA-256 of a registered checkpoint (registered once, never rewritten)."""
    return hashlib.sha256(read_bytes(checkpoint)).hexdigest()[:8]


def _metadata(data: bytes) -> dict:
    """safetensors keeps metadata in its JSON header: an 8-byte length, then the header."""
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]


def with_versions(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with `content`: the versions of each image file and its mask, now."""
    masks = df["mask_uri"] if "mask_uri" in df.columns else [None] * len(df)
    return df.assign(content=[f"{i}|{m}" for i, m in zip(versions(df["uri"]), versions(masks))])


def worker_batch(df: pd.DataFrame) -> dict:
    """A FeatureWorker batch of the rows (with their versions, and their boxes where given)."""
    if "content" not in df.columns:
        df = with_versions(df)
    return df.assign(box=boxes(df))[WORKER_COLUMNS].astype(object).to_dict("list")


WORKER_COLUMNS = ["image_id", "uri", "mask_uri", "content", "box"]


def boxes(df: pd.DataFrame) -> list:
    """Each row's box (x1, y1, x2, y2) in pixels, None where not given (manifest.BOX)."""
    if not set(BOX) <= set(df.columns):
        return [None] * len(df)
    values = df[BOX].to_numpy(np.float64)
    return [tuple(v) if np.isfinite(v).all() else None for v in values.tolist()]


class FeatureWorker:
    """A Ray Data actor: loads the backbone once, then turns batches of rows into cache files.

    A thread pool decodes the views ahead of the forward and writes the finished ones
    behind it; with micro-batches (on a GPU) that work runs while the forward does.
    """

    def __init__(
        self,
        backbone_conf,
        image_size: int,
        cache: FeatureCache,
        threads=None,
        flips=False,
        foreground=None,
        micro_batch=None,
    ):
        from .backbones import build_backbone
        from .foreground import Foregrounds

        if threads:
            torch.set_num_threads(int(threads))
        keep_freed_memory()
        self.device = worker_device()
        self.backbone, _ = build_backbone(backbone_conf)
        # channels-last: 1.85x on the CPU for MobileNetV2 (BENCHMARKS.md), and what cuDNN wants
        self.backbone.to(self.device, memory_format=torch.channels_last)
        self.io = ThreadPoolExecutor(max(1, torch.get_num_threads()))  # decode and write beside the forward
        self.size, self.cache, self.flips = image_size, cache, flips
        self.micro_batch = micro_batch or (32 if self.device.type == "cuda" else None)  # None: the whole batch
        self.masks = Foregrounds(foreground, cache.root, self.device)  # where masks come from when none is given
        self.where = device_name(self.device)
        log.info("feature actor on %s (%s)", self.where, self.device)

    def _prepare(self, image_id, uri, mask_uri, content, box) -> list[tuple]:
        """(cache id, input (size, size, 3), foreground, scale, size, mask source, content) of
        the image, and of its mirror (the resized image mirrored: no second resize)."""
        image = load_image(uri)
        mask, source = self.masks.mask(image_id, image, mask_uri, content, box)
        pixels, area, scale = fit(image, mask, self.size)
        views = [(image_id, pixels, area)]
        if self.flips:
            views.append((image_id + FLIPPED, pixels[:, ::-1], area[:, ::-1]))
        b = self.backbone
        return [
            (i, *model_input(p, a, self.size, b.stride, b.mean, b.std), scale, image.size, source, content)
            for i, p, a in views
        ]

    def _try_prepare(self, row) -> list[tuple] | str:
        """The prepared views, or why the image cannot be used (naming the file)."""
        try:
            return self._prepare(*row)
        except BadInput as e:
            return str(e)
        except Exception as e:
            _, uri, mask_uri, _, _ = row
            return f"{uri}{f' (mask {mask_uri})' if mask_uri else ''}: {e or type(e).__name__}"

    def _views(self, rows, errors: list):
        """The prepared views of `rows` as they are decoded, in order; one entry in `errors`
        per row ("" when fine)."""
        for views in self.io.map(self._try_prepare, rows):
            bad = isinstance(views, str)  # a bad file must not stop the run: it is reported
            errors.append(views if bad else "")
            yield from [] if bad else views

    def _forward(self, views: list[tuple]) -> torch.Tensor:
        """(V, C, h, w) float32 features of the views, on the CPU."""
        x = torch.from_numpy(np.stack([v[1] for v in views])).permute(0, 3, 1, 2)  # channels-last as laid out
        if self.device.type == "cuda":
            x = x.pin_memory()  # so the copy to the GPU is asynchronous
        x = x.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        with autocast(self.device):
            return self.backbone(x).float().cpu()

    def _finish(self, view, f: torch.Tensor) -> tuple[str, int]:
        """Foreground (from the features with foreground.method=pca) and the cache write of one view."""
        image_id, _, fg, scale, size, source, content = view
        if source == "pca":
            fg = pca_foreground(f, fg)
        cached = ImageFeatures(
            f.permute(1, 2, 0).to(torch.float16), fg, scale, self.backbone.stride, *size, content=content
        )
        self.cache.save(image_id, cached)
        return image_id, int(fg.sum())

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        t0, errors, writes = time.perf_counter(), [], []
        boxes = batch["box"] if "box" in batch else [None] * len(batch["image_id"])
        boxes = [None if b is None else tuple(float(v) for v in b) for b in boxes]
        rows = list(zip(batch["image_id"], batch["uri"], batch["mask_uri"], batch["content"], boxes))
        ready = self._views(rows, errors)
        for views in iter(lambda: list(islice(ready, self.micro_batch)), []):
            writes += [self.io.submit(self._finish, v, f) for v, f in zip(views, self._forward(views))]
        fgs = dict(w.result() for w in writes)
        return {
            "image_id": np.asarray(batch["image_id"]),
            "n_fg": np.asarray([fgs.get(i, 0) for i in batch["image_id"]], dtype=np.int64),
            "error": np.asarray(errors, dtype=object),
            "seconds": np.full(len(errors), (time.perf_counter() - t0) / max(1, len(errors))),
            "actor": np.full(len(errors), self.where, dtype=object),
            "mask_source": np.asarray([self.masks.source(m) for m in batch["mask_uri"]], dtype=object),
        }


def keep_freed_memory() -> None:
    """Keep freed memory in the process (glibc): by default it hands a forward's large
    activation buffers back to the kernel and page-faults them in again on the next one,
    which took half the CPU time of MobileNetV2 at 320 px (2-core EPYC: 68 -> 126 views/s
    at batch 2). An actor runs one model over and over: its peak is its working set anyway."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to keep
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks up to 1 GiB come from the heap...
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: ...and stay in it when freed


def worker_device() -> torch.device:
    """The GPU Ray gave this worker (CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """bf16 on a GPU (the backbone's and the adapter's forward), full precision on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def device_name(device: torch.device) -> str:
    """Where an actor runs: its Ray node and, with a GPU, the devices Ray gave it."""
    import ray

    node = ray.get_runtime_context().get_node_id()[-8:] if ray.is_initialized() else "local"
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"node {node} " + (f"CUDA_VISIBLE_DEVICES={gpus}" if gpus is not None else device.type)


def plan_actors(conf, resources: dict) -> dict:
    """Actor count and resources: one actor per GPU, else CPU actors that leave room for I/O."""
    gpus = int(resources.get("GPU", 0))
    use_gpu = conf.device == "cuda" or (conf.device == "auto" and gpus > 0)
    if use_gpu:
        actors = conf.actors or max(1, gpus)
        return {
            "actors": actors,
            "num_gpus": 1,
            "num_cpus": conf.cpus_per_actor,
            "threads": conf.threads,
            "batch_size": conf.batch_size or 32,
        }
    cpus = resources.get("CPU", 1)
    actors = conf.actors or max(1, int(cpus // (2 * conf.cpus_per_actor)))
    threads = conf.threads or max(1, math.floor(cpus / actors))
    return {
        "actors": actors,
        "num_gpus": 0,
        "num_cpus": conf.cpus_per_actor,
        "threads": threads,
        "batch_size": conf.batch_size or 8,
    }


RESULT_COLUMNS = ["image_id", "n_fg", "error", "seconds", "actor", "mask_source"]


def extract_features(todo, conf, backbone_conf, image_size: int, cache: FeatureCache, start_ray=None, foreground=None):
    """Features of the rows of `todo` (FeatureCache.stale: image_id, uri, mask_uri, content) on a
    Ray Data actor pool; returns the per-image results (errors among them) and the seconds
    it took. `start_ray` is called first when there is anything to compute (a run with
    every feature cached needs no Ray).

    The actors are not restarted by Ray (`max_restarts=0`): Ray Data hands them their
    arguments through the object store, where a restart can find them gone
    (ray-project/ray#53727). A lost actor ends the pass instead, and the next pass
    computes only what is neither cached nor reported yet.
    """
    import ray

    quiet_ray_data()
    out, t0 = [], time.perf_counter()
    if todo.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS), 0.0
    if start_ray:
        start_ray()
        t0 = time.perf_counter()
    plan = plan_actors(conf, ray.cluster_resources())
    log.info(
        "features: %d images on %d actor(s), %s",
        len(todo),
        plan["actors"],
        "1 GPU each" if plan["num_gpus"] else f"{plan['threads']} threads each",
    )
    with Progress(len(todo), "features", "images") as bar:
        for attempt in range(1, conf.attempts + 1):
            try:
                for batch in feature_dataset(
                    todo, conf, plan, backbone_conf, image_size, cache, foreground
                ).iter_batches(batch_size=None, batch_format="pandas"):
                    out.append(batch)
                    bar.update(len(batch))
                break
            except ray.exceptions.RayError as e:
                if fault := Fault.found_in(e):  # e.g. a full disk: another pass would fill it again
                    raise fault from None
                reported = set(pd.concat(out)["image_id"]) if out else set()
                todo = cache.stale(todo.drop(columns="cached", errors="ignore"), conf.flips)
                todo = todo[~todo["image_id"].isin(reported)]
                cause = str(e).strip().splitlines()[0][:200]
                if attempt == conf.attempts:
                    raise RuntimeError(
                        f"features: pass {attempt} of {conf.attempts} failed too ({cause}); "
                        f"{len(todo)} images left without features: rerun with the same run_id"
                    ) from e
                log.warning(
                    "features: pass %d failed (%s); %d images left, starting pass %d of %d",
                    attempt,
                    cause,
                    len(todo),
                    attempt + 1,
                    conf.attempts,
                )
    return pd.concat(out, ignore_index=True), time.perf_counter() - t0


def feature_dataset(todo, conf, plan, backbone_conf, image_size, cache, foreground=None):
    """The Ray Data pipeline: rows of `todo` -> FeatureWorker actors -> per-image results."""
    import ray
    from ray.util.annotations import RayDeprecationWarning

    blocks = max(plan["actors"], math.ceil(len(todo) / plan["batch_size"]))
    rows = ray.data.from_pandas(todo.assign(box=boxes(todo))[WORKER_COLUMNS].astype(object)).repartition(blocks)
    # max_restarts reaches the actors through `ray_remote_args`, deprecated for Ray 2.64: revisit
    # with ray-project/ray#53727 (then Ray's own actor restarts are safe to use).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RayDeprecationWarning)
        return rows.map_batches(
            FeatureWorker,
            fn_constructor_kwargs={
                "backbone_conf": backbone_conf,
                "image_size": image_size,
                "cache": cache,
                "threads": None if plan["num_gpus"] else plan["threads"],
                "flips": conf.flips,
                "foreground": foreground,
                "micro_batch": conf.micro_batch,
            },
            batch_size=plan["batch_size"],
            compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
            num_cpus=plan["num_cpus"],
            num_gpus=plan["num_gpus"],
            max_restarts=0,
        )
