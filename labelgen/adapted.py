"""Relabelling with a trained adapter (label -> train -> relabel -> retrain).

`labels.features=<model_id>|promoted|latest` chains on an adapter's refined features
instead of the backbone's: they are computed from the cached backbone features (the
adapter's input), once, and cached beside them under their own fingerprint. The run's
`backbone_fingerprint` stays the backbone's, which is what the next adapter trains on;
`label_features` names the features the labels were made on.
"""

import hashlib
import logging
import time
from functools import lru_cache

import ray
import torch

from .console import Progress
from .errors import UsageError
from .features import ImageFeatures, autocast, cache_uri, cached_versions, load_features, save_features, worker_device
from .io import read_bytes
from .models import Adapter, load_checkpoint
from .ray_utils import wait_each

log = logging.getLogger(__name__)


def resolve_model(store, name: str, fingerprint: str) -> dict | None:
    """The model `labels.features` names (None: the backbone's own features), in the store's
    one vocabulary (latest | promoted | a model id), checked against the run's backbone features."""
    if name == "backbone":
        return None
    if name.startswith("adapter:"):  # the spelling of labelgen 0.1
        log.warning(
            "labels.features=%s: write labels.features=%s (adapter: goes away in the next release)",
            name,
            name[len("adapter:") :],
        )
        name = name[len("adapter:") :]
    record = store.model(name)
    if record is None and name == "promoted":
        raise UsageError(
            f"labels.features=promoted: {store} has no promoted adapter; train one "
            f"(python -m trainer.train data.store={store}) or name one with labels.features=<model_id>"
        )
    if record is None:
        raise UsageError(
            f"labels.features={name}: {store} has no trained model {name}; give backbone, latest, promoted "
            f'or a model id: python -m queries sql "SELECT model_id, status FROM models" store={store}'
        )
    if record["backbone_fingerprint"] != fingerprint:
        raise UsageError(
            f"labels.features={name}: adapter {record['model_id']} was trained on features "
            f"{record['backbone_fingerprint']}, this run's backbone gives {fingerprint}: run with that backbone"
        )
    return record


def label_fingerprint(fingerprint: str, model: dict | None) -> str:
    """The cache fingerprint of the features labels are made on: an adapter's carries a digest
    of its weights, so two models under one id (two stores sharing a cache, a hand-given
    model_id) never read each other's refined features."""
    return f"{fingerprint}+adapter-{model['model_id']}-{weights_digest(model['checkpoint'])}" if model else fingerprint


@lru_cache(maxsize=64)
def weights_digest(checkpoint: str) -> str:
    """The first 8 hex digits of the SHA-256 of a registered checkpoint (registered once, never rewritten)."""
    return hashlib.sha256(read_bytes(checkpoint)).hexdigest()[:8]


@torch.inference_mode()
def adapt_images(
    checkpoint: str, cache_root: str, fingerprint: str, out_fingerprint: str, image_ids: list[str], batch: int = 16
) -> int:
    """Refine the cached backbone features of `image_ids` with the adapter and cache them
    (the stored cells of the zero-filled grids, as the adapter was trained on)."""
    adapter = load_checkpoint(Adapter, checkpoint)
    device = worker_device()
    adapter.to(device)
    for s in range(0, len(image_ids), batch):
        ids = image_ids[s : s + batch]
        feats = [load_features(cache_uri(cache_root, fingerprint, i)) for i in ids]
        x = torch.stack([f.grid().permute(2, 0, 1).float() for f in feats]).to(
            device
        )  # one grid side per backbone and size
        with autocast(device):
            out = adapter(x).float().cpu()
        for i, f, o in zip(ids, feats, out):
            refined = ImageFeatures(
                o.permute(1, 2, 0).to(torch.float16), f.fg, f.scale, f.stride, f.width, f.height, content=f.content
            )
            save_features(cache_uri(cache_root, out_fingerprint, i), refined)
    return len(image_ids)


@ray.remote(num_cpus=1)
def adapt_task(*args) -> int:
    return adapt_images(*args)


def adapt_features(image_ids, model: dict, cache_root: str, fingerprint: str, per_task: int = 64) -> float:
    """Adapter features of the images not cached for their backbone features' content yet,
    as Ray tasks (a GPU each where the cluster has one); returns the seconds it took."""
    out_fingerprint = label_fingerprint(fingerprint, model)
    raw, refined = (cached_versions(cache_root, fp, image_ids) for fp in (fingerprint, out_fingerprint))
    todo = sorted(i for i in image_ids if i not in refined or refined[i] != raw.get(i))
    if not todo:
        return 0.0
    gpu = ray.cluster_resources().get("GPU", 0) > 0
    log.info("adapter %s: refining the features of %d images", model["model_id"], len(todo))
    task, t0 = adapt_task.options(num_gpus=1 if gpu else 0), time.perf_counter()
    refs = [
        task.remote(model["checkpoint"], cache_root, fingerprint, out_fingerprint, todo[s : s + per_task])
        for s in range(0, len(todo), per_task)
    ]
    with Progress(len(todo), "adapter features", "images") as bar:
        for _, n in wait_each(refs):
            bar.update(n)
    return time.perf_counter() - t0
