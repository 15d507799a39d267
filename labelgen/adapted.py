"""Relabelling with a trained adapter (label -> train -> relabel -> retrain).

`labels.features=<model_id>|promoted|latest` chains on an adapter's refined features
instead of the backbone's: they are computed from the cached backbone features (the
adapter's input), once, and cached beside them under their own fingerprint. The run's
`backbone_fingerprint` stays the backbone's, which is what the next adapter trains on;
`label_features` names the features the labels were made on.
"""

import logging
import time

import ray
import torch

from .console import Progress
from .errors import UsageError
from .features import FeatureCache, ImageFeatures, autocast, worker_device
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


@torch.inference_mode()
def adapt_images(
    checkpoint: str, features: FeatureCache, refined: FeatureCache, image_ids: list[str], batch: int = 16
) -> int:
    """Refine the cached backbone `features` of `image_ids` with the adapter and cache them in
    `refined` (the stored cells of the zero-filled grids, as the adapter was trained on)."""
    adapter = load_checkpoint(Adapter, checkpoint)
    device = worker_device()
    adapter.to(device)
    for s in range(0, len(image_ids), batch):
        ids = image_ids[s : s + batch]
        feats = [features.load(i) for i in ids]
        x = torch.stack([f.grid().permute(2, 0, 1).float() for f in feats]).to(
            device
        )  # one grid side per backbone and size
        with autocast(device):
            out = adapter(x).float().cpu()
        for i, f, o in zip(ids, feats, out):
            grid = o.permute(1, 2, 0).to(torch.float16)
            refined.save(i, ImageFeatures(grid, f.fg, f.scale, f.stride, f.width, f.height, content=f.content))
    return len(image_ids)


@ray.remote(num_cpus=1)
def adapt_task(*args) -> int:
    return adapt_images(*args)


def adapt_features(image_ids, model: dict, features: FeatureCache, per_task: int = 64) -> float:
    """Adapter features (`features.refined(model)`) of the images not cached for their backbone
    features' content yet, as Ray tasks (a GPU each where the cluster has one); returns the
    seconds it took."""
    refined = features.refined(model)
    raw, done = features.versions(image_ids), refined.versions(image_ids)
    todo = sorted(i for i in image_ids if i not in done or done[i] != raw.get(i))
    if not todo:
        return 0.0
    gpu = ray.cluster_resources().get("GPU", 0) > 0
    log.info("adapter %s: refining the features of %d images", model["model_id"], len(todo))
    task, t0 = adapt_task.options(num_gpus=1 if gpu else 0), time.perf_counter()
    refs = [
        task.remote(model["checkpoint"], features, refined, todo[s : s + per_task])
        for s in range(0, len(todo), per_task)
    ]
    with Progress(len(todo), "adapter features", "images") as bar:
        for _, n in wait_each(refs):
            bar.update(n)
    return time.perf_counter() - t0
