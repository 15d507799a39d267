"""Dense features per image: preprocessing, the feature cache, and the Ray Data stage.

An image is padded (right and bottom) to a square and resized to the backbone's
input side, so a feature cell (row, col) covers original pixels
((col + 0.5) * stride / scale, (row + 0.5) * stride / scale). A cell is foreground
when at least half of it lies on the mask (or, without a mask, on the image).
"""

import hashlib
import io as _io
import json
import logging
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .backbones.base import IMAGENET_MEAN
from .console import Progress, quiet_ray_data
from .io import join, list_files, read_bytes, write_bytes

log = logging.getLogger(__name__)

default_conf = {
    "batch_size": None,  # images per actor call; default: 32 on a GPU (x2 with flips), 8 on the CPU
    "actors": None,  # default: one per GPU, else one per `cpus_per_actor` CPUs (at least 1)
    "cpus_per_actor": 1.0,  # fractional leaves room for Ray Data's read tasks on small nodes
    "threads": None,  # torch threads per CPU actor; default: the node's cores / actors
    "device": "auto",  # auto (GPU when the cluster has one) | cpu | cuda
    "cache": None,  # feature cache URI; default: <store>/features
    "flips": True,  # also cache features of the mirrored image (flip augmentation, pose alignment)
    "mask_fallback": "pca",  # images without a mask: pca (foreground from the features) | image (all of it)
    "attempts": 3,  # a lost actor ends the pass; the next pass computes what is not cached yet
}
FLIPPED = "#flipped"  # cache id suffix of an image's mirrored twin: x -> width - x


@dataclass
class ImageFeatures:
    """One image's cached features: the full grid, its foreground, and the pixel frame."""

    feats: torch.Tensor  # (h, w, C) float32 unit vectors
    fg: torch.Tensor  # (h, w) bool
    scale: float  # input pixels per original pixel
    stride: int  # input pixels per cell
    width: int
    height: int

    def fg_index(self) -> torch.Tensor:
        """Flat cell indices of the foreground, row-major."""
        return self.fg.flatten().nonzero().squeeze(1)

    def fg_feats(self) -> torch.Tensor:
        """(N, C) features of the foreground cells, row-major (what the chains match)."""
        return self.feats.flatten(0, 1)[self.fg_index()]

    def cell_xy(self, index: torch.Tensor) -> torch.Tensor:
        """Grid (col, row) of flat cell indices, as float."""
        w = self.fg.shape[1]
        return torch.stack([index % w, index // w], dim=1).float()

    def to_pixels(self, xy: torch.Tensor) -> torch.Tensor:
        """Grid coordinates to original-image pixels (cell centres)."""
        return (xy + 0.5) * self.stride / self.scale

    def descriptor(self) -> np.ndarray:
        """A global descriptor: the unit mean of the foreground features (all, without any)."""
        cells = self.feats[self.fg] if self.fg.any() else self.feats.flatten(0, 1)
        return F.normalize(cells.float().mean(0), dim=0).numpy()

    @property
    def cell_px(self) -> float:
        """One grid unit in original pixels."""
        return self.stride / self.scale


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
    w, h = image.size
    if mask is not None and mask.size != (w, h):
        raise ValueError(f"mask is {mask.size[0]}x{mask.size[1]} but the image is {w}x{h}")
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    x = torch.from_numpy(np.asarray(image.resize((nw, nh), Image.BICUBIC), dtype=np.float32) / 255.0)
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    canvas = torch.zeros(size, size, 3)  # zero after normalisation: the mean colour
    canvas[:nh, :nw] = x
    area = torch.zeros(size, size)
    if mask is None:
        area[:nh, :nw] = 1.0
    else:
        m = np.asarray(mask.resize((nw, nh), Image.BILINEAR), dtype=np.float32) / 255.0
        area[:nh, :nw] = torch.from_numpy(m)
    fg = F.avg_pool2d(area[None, None], stride)[0, 0] >= 0.5
    return canvas.permute(2, 0, 1), fg, scale


def pca_foreground(feats: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Foreground without a mask: the sign of the first principal component of the image's
    features, oriented so that the centre of the image is foreground (objects are framed
    there), kept inside the image. (C, h, w), (h, w) -> (h, w) bool."""
    x = feats.flatten(1).T[inside.flatten()].float()
    if len(x) < 2:
        return inside.clone()
    x = x - x.mean(0)
    pc = torch.linalg.svd(x, full_matrices=False).Vh[0]
    proj = torch.zeros(inside.numel())
    proj[inside.flatten()] = x @ pc
    proj = proj.reshape(inside.shape)
    h, w = inside.shape
    centre = proj[h // 4 : h - h // 4, w // 4 : w - w // 4]
    if centre.mean() < 0:
        proj = -proj
    return inside & (proj > 0)


def cache_uri(cache_root: str, fingerprint: str, image_id: str) -> str:
    h = hashlib.sha1(image_id.encode()).hexdigest()
    return join(cache_root, fingerprint, h[:2], f"{h}.safetensors")


def save_features(uri: str, feats: torch.Tensor, fg: torch.Tensor, scale: float, stride: int, size):
    """Store (C, h, w) features as (h, w, C) float16 with the pixel frame as metadata."""
    tensors = {
        "feats": feats.permute(1, 2, 0).to(torch.float16).contiguous().numpy(),
        "fg": fg.to(torch.uint8).numpy(),
    }
    meta = {"scale": repr(scale), "stride": str(stride), "width": str(size[0]), "height": str(size[1])}
    write_bytes(uri, st_save(tensors, metadata=meta))


def load_features(uri: str) -> ImageFeatures:
    data = read_bytes(uri)
    tensors = st_load(data)
    # safetensors keeps metadata in its JSON header: an 8-byte length, then the header
    meta = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    return ImageFeatures(
        feats=torch.from_numpy(tensors["feats"]).float(),
        fg=torch.from_numpy(tensors["fg"]).bool(),
        scale=float(meta["scale"]),
        stride=int(meta["stride"]),
        width=int(meta["width"]),
        height=int(meta["height"]),
    )


def cached_ids(cache_root: str, fingerprint: str, image_ids, flips: bool = False) -> set[str]:
    """Which images already have features (and their mirrored twin's), from one listing of the cache."""
    present = {os.path.basename(p) for p in list_files(join(cache_root, fingerprint)) if p.endswith(".safetensors")}

    def have(i):
        return f"{hashlib.sha1(i.encode()).hexdigest()}.safetensors" in present

    return {i for i in image_ids if have(i) and (not flips or have(i + FLIPPED))}


class FeatureWorker:
    """A Ray Data actor: loads the backbone once, then turns batches of rows into cache files."""

    def __init__(self, backbone_conf, image_size: int, cache_root: str, fingerprint: str, threads=None, flips=False,
                 mask_fallback="pca"):
        from .backbones import build_backbone

        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.backbone, _ = build_backbone(backbone_conf)
        # channels-last: 1.85x on the CPU for MobileNetV2 (BENCHMARKS.md), and what cuDNN wants
        self.backbone.to(self.device, memory_format=torch.channels_last)
        self.io = ThreadPoolExecutor(max(1, torch.get_num_threads()))  # decode and write beside the forward
        self.size, self.cache_root, self.fingerprint, self.flips = image_size, cache_root, fingerprint, flips
        if mask_fallback not in ("pca", "image"):
            raise ValueError(f"features.mask_fallback={mask_fallback!r}: choose pca or image")
        self.mask_fallback = mask_fallback
        self.where = device_name(self.device)
        log.info("feature actor on %s (%s)", self.where, self.device)

    def _prepare(self, image_id, uri, mask_uri) -> list[tuple]:
        """(cache id, input, foreground, scale, size, has mask) of the image, and of its mirror."""
        image = load_image(uri)
        mask = load_image(mask_uri, "L") if mask_uri else None
        b = self.backbone
        views = [(image_id, image, mask)]
        if self.flips:
            flip = Image.Transpose.FLIP_LEFT_RIGHT
            views.append((image_id + FLIPPED, image.transpose(flip), mask and mask.transpose(flip)))
        return [(i, *preprocess(im, m, self.size, b.stride, b.mean, b.std), im.size, m is not None) for i, im, m in views]

    def _try_prepare(self, row) -> list[tuple] | str:
        """The prepared views, or why the image cannot be used (naming the file)."""
        try:
            return self._prepare(*row)
        except BadInput as e:
            return str(e)
        except Exception as e:
            _, uri, mask_uri = row
            return f"{uri}{f' (mask {mask_uri})' if mask_uri else ''}: {e or type(e).__name__}"

    def _finish(self, view, f: torch.Tensor) -> tuple[str, int]:
        """Foreground (the PCA fallback without a mask) and the cache write of one view."""
        image_id, _, fg, scale, size, has_mask = view
        if not has_mask and self.mask_fallback == "pca":
            fg = pca_foreground(f, fg)
        save_features(cache_uri(self.cache_root, self.fingerprint, image_id), f, fg, scale, self.backbone.stride, size)
        return image_id, int(fg.sum())

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        t0, ok, errors = time.perf_counter(), [], []
        rows = list(zip(batch["image_id"], batch["uri"], batch["mask_uri"]))
        for views in self.io.map(self._try_prepare, rows):
            if isinstance(views, str):  # a bad file must not stop the run: it is reported
                errors.append(views)
                continue
            ok.extend(views)
            errors.append("")
        fgs = {}
        if ok:
            x = torch.stack([o[1] for o in ok]).to(self.device, memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                feats = self.backbone(x).float().cpu()
            fgs = dict(self.io.map(self._finish, ok, feats))
        return {
            "image_id": np.asarray(batch["image_id"]),
            "n_fg": np.asarray([fgs.get(i, 0) for i in batch["image_id"]], dtype=np.int64),
            "error": np.asarray(errors, dtype=object),
            "seconds": np.full(len(errors), (time.perf_counter() - t0) / max(1, len(errors))),
            "actor": np.full(len(errors), self.where, dtype=object),
        }


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
        return {"actors": actors, "num_gpus": 1, "num_cpus": conf.cpus_per_actor, "threads": conf.threads,
                "batch_size": conf.batch_size or 32}
    cpus = resources.get("CPU", 1)
    actors = conf.actors or max(1, int(cpus // (2 * conf.cpus_per_actor)))
    threads = conf.threads or max(1, math.floor(cpus / actors))
    return {"actors": actors, "num_gpus": 0, "num_cpus": conf.cpus_per_actor, "threads": threads,
            "batch_size": conf.batch_size or 8}


RESULT_COLUMNS = ["image_id", "n_fg", "error", "seconds", "actor"]


def extract_features(df, conf, backbone_conf, image_size: int, cache_root: str, fingerprint: str):
    """Features of the images not cached yet, on a Ray Data actor pool; returns the
    per-image results (errors among them) and the seconds it took.

    The actors are not restarted by Ray (`max_restarts=0`): Ray Data hands them their
    arguments through the object store, where a restart can find them gone
    (ray-project/ray#53727). A lost actor ends the pass instead, and the next pass
    computes only what is neither cached nor reported yet.
    """
    import ray

    quiet_ray_data()
    todo = df[~df["image_id"].isin(cached_ids(cache_root, fingerprint, df["image_id"], conf.flips))]
    out, t0 = [], time.perf_counter()
    if todo.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS), 0.0
    plan = plan_actors(conf, ray.cluster_resources())
    log.info("features: %d images on %d actor(s), %s", len(todo), plan["actors"],
             "1 GPU each" if plan["num_gpus"] else f"{plan['threads']} threads each")
    with Progress(len(todo), "features", "images") as bar:
        for attempt in range(1, conf.attempts + 1):
            try:
                for batch in feature_dataset(todo, conf, plan, backbone_conf, image_size, cache_root, fingerprint).iter_batches(
                        batch_size=None, batch_format="pandas"):
                    out.append(batch)
                    bar.update(len(batch))
                break
            except ray.exceptions.RayError as e:
                reported = set(pd.concat(out)["image_id"]) if out else set()
                done = cached_ids(cache_root, fingerprint, todo["image_id"], conf.flips) | reported
                todo = todo[~todo["image_id"].isin(done)]
                cause = str(e).strip().splitlines()[0][:200]
                if attempt == conf.attempts:
                    raise RuntimeError(f"features: pass {attempt} of {conf.attempts} failed too ({cause}); "
                                       f"{len(todo)} images left without features: rerun with the same run_id") from e
                log.warning("features: pass %d failed (%s); %d images left, starting pass %d of %d",
                            attempt, cause, len(todo), attempt + 1, conf.attempts)
    return pd.concat(out, ignore_index=True), time.perf_counter() - t0


def feature_dataset(todo, conf, plan, backbone_conf, image_size, cache_root, fingerprint):
    """The Ray Data pipeline: rows of `todo` -> FeatureWorker actors -> per-image results."""
    import ray
    from ray.util.annotations import RayDeprecationWarning

    blocks = max(plan["actors"], math.ceil(len(todo) / plan["batch_size"]))
    rows = ray.data.from_pandas(todo[["image_id", "uri", "mask_uri"]].astype(object)).repartition(blocks)
    # max_restarts reaches the actors through `ray_remote_args`, deprecated for Ray 2.64: revisit
    # with ray-project/ray#53727 (then Ray's own actor restarts are safe to use).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RayDeprecationWarning)
        return rows.map_batches(
            FeatureWorker,
            fn_constructor_kwargs={
                "backbone_conf": backbone_conf,
                "image_size": image_size,
                "cache_root": cache_root,
                "fingerprint": fingerprint,
                "threads": None if plan["num_gpus"] else plan["threads"],
                "flips": conf.flips,
                "mask_fallback": conf.mask_fallback,
            },
            batch_size=plan["batch_size"],
            compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
            num_cpus=plan["num_cpus"],
            num_gpus=plan["num_gpus"],
            max_restarts=0,
        )
