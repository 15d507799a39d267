"""`python -m trainer.train [key=value ...]`: fine-tune the adapter on pseudo-labels with Ray Train.

A TorchTrainer runs the loop on `scaling.workers` workers (DDP; a GPU each when
`scaling.use_gpu`); each worker reads the committed labels and the cached
features itself, trains on its shard of the training pairs, and rank 0 writes a
checkpoint every `checkpoint.every` steps (local or S3). A failed worker restarts
from the last checkpoint (FailureConfig). The driver then evaluates the raw
backbone and the adapter side by side, registers the model in the store and
promotes it only if it beats the promoted one (or the raw backbone).
"""

import logging
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from omegaconf import OmegaConf

from labelgen import ray_utils
from labelgen.cli import run_command
from labelgen.config import Location
from labelgen.errors import UsageError
from labelgen.io import join
from labelgen.models import Adapter, load_checkpoint
from labelgen.ray_utils import RayConf
from labelgen.store import LabelStore, new_id, now

from . import data as data_mod
from . import evaluate as eval_mod
from . import tracking
from .source import resolve_source
from .tracking import TrackingConf

log = logging.getLogger("trainer")

STORE_ALIASES = {"store": "data.store", "catalog": "data.catalog"}  # store= as every store-reading command takes it


@dataclass
class ModelConf:
    out_dim: int | None = None  # adapter output channels; default: the backbone's
    dropout: float = 0.2  # on the adapter's input, in training


@dataclass
class OptimConf:
    lr: float = 5e-3  # AdamW peak learning rate (one-cycle schedule)
    weight_decay: float = 1e-3  # AdamW
    steps: int = 300  # optimiser steps
    pairs_per_step: int = 4  # per worker
    dense_weight: float = 1.0  # dense soft-argmax loss, beside the sparse CLIP loss
    temperature: float = 0.02  # dense soft-argmax
    label_noise: float = 0.25  # Gaussian noise on dense targets, grid units
    flip_prob: float = 0.5  # mirror both images of a pair (needs features.flips=true in the label runs)
    log_every: int = 25  # steps between progress lines


@dataclass
class ScalingConf:
    workers: int = 1  # Ray Train workers (DDP)
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: float = 1.0  # CPUs Ray reserves per worker


@dataclass
class CheckpointConf:
    every: int = 100  # steps between checkpoints
    storage: Location | None = None  # a folder or s3:// URI; default: <store>/checkpoints
    keep: int = 2  # checkpoints kept


@dataclass
class TrainConf:
    data: data_mod.DataConf = field(default_factory=data_mod.DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    optim: OptimConf = field(default_factory=OptimConf)
    eval: eval_mod.EvalConf = field(default_factory=eval_mod.EvalConf)
    scaling: ScalingConf = field(default_factory=ScalingConf)
    checkpoint: CheckpointConf = field(default_factory=CheckpointConf)
    promote_margin: float = 0.02  # promote only when the held-out cycle consistency rises by more than this (chosen
    # on dev: rounds that gained less did not raise keypoint PCK)
    max_failures: int = 2  # worker failures to recover from (from the last checkpoint)
    model_id: str | None = None  # default: a new id
    seed: int = 0  # weights, pair sampling, augmentation
    tracking: TrackingConf = field(default_factory=TrackingConf)
    ray: RayConf = field(default_factory=RayConf)


default_conf = TrainConf


def decide(metrics: dict, promoted: dict | None, margin: float = 0.0) -> tuple[str, str]:
    """Promote only on a score higher by more than `margin` than the promoted adapter's (or
    the raw backbone's when none is promoted), measured now on the same held-out pairs: their
    cycle consistency, which needs no truth and, unlike PCK against held-out pseudo-labels,
    does not favour the features whose chains made the labels."""
    key, base_key = "adapter_val_cycle", "promoted_val_cycle" if promoted else "raw_val_cycle"
    new, old = metrics[key], metrics[base_key]
    if np.isnan(new):
        return "rejected", "no held-out pairs to validate on"
    against = f"promoted model {promoted['model_id']}" if promoted else "the raw backbone"
    if new > old + margin:
        return "promoted", f"{key} {new:.4f} > {old:.4f} + {margin:g} of {against}"
    return "rejected", f"{key} {new:.4f} <= {old:.4f} + {margin:g} of {against}"


def train(conf, parent: dict | None = None, loop: tracking.Tracking | None = None) -> dict:
    """Train, evaluate, register; returns the model record. `parent`: the model to beat (default: the
    promoted one); `loop`: the tracking of the retrain loop this is a round of."""
    store = LabelStore(conf.data.store, conf.data.catalog)
    source = resolve_source(conf.data)
    data = data_mod.load_label_data(source, conf.data.val_split)  # fail here, before Ray, on bad input
    if not data.train:
        raise UsageError(f"no training pair in runs {data.runs}: every labelled pair touches a held-out image")
    if conf.optim.flip_prob > 0 and not data.flips:
        raise UsageError(
            f"label runs {data.runs} cached no mirrored features: re-run them with features.flips=true "
            "(the cache is reused) or set optim.flip_prob=0"
        )
    conf.data.runs, conf.data.snapshot = data.runs, data.snapshot
    # recorded with the model: where its checkpoints and metrics went
    conf.checkpoint.storage = storage(conf, store)
    conf.tracking.mlflow = tracking.mlflow_uri(conf.tracking.mlflow)
    model_id = conf.model_id or new_id()
    log.info(
        "model %s: %d training and %d held-out pairs from runs %s", model_id, len(data.train), len(data.val), data.runs
    )
    promoted = parent if parent is not None else store.promoted_model()
    logdir = join(conf.checkpoint.storage, model_id, "tensorboard")
    tags = {"model_id": model_id, "label_runs": " ".join(data.runs), "store": store.uri}
    with tracking.run(conf.tracking, logdir, model_id, OmegaConf.to_container(conf), tags, loop) as tracker:
        record = store.save_model(
            {
                "model_id": model_id,
                "parent": promoted and promoted["model_id"],
                "label_runs": data.runs,
                "snapshot": data.snapshot,
                "backbone_fingerprint": data.features.fingerprint,
                "config": OmegaConf.to_yaml(conf),
                "created": now(),
            }
        )
        where = ray_utils.init_ray(conf.ray)
        log.info("ray: %s", where)
        for line in tracking.watch(conf.tracking, conf.checkpoint.storage, model_id):
            log.info("metrics: %s", line)
        from .fit import fit  # Ray Train, loaded once a model is trained

        t0 = time.perf_counter()
        result = fit(conf, source, model_id, tracker.where)
        train_s = round(time.perf_counter() - t0, 1)
        with result.checkpoint.as_directory() as d:
            weights = open(os.path.join(d, "adapter.pt"), "rb").read()
        scores = held_out_scores(conf, data, weights, promoted)
        metrics = {
            "train_s": train_s,
            "steps": conf.optim.steps,
            "final_loss": result.metrics["loss"],
            "train_pairs": len(data.train),
            "val_pairs": len(data.val),
            **scores,
        }
        decision, reason = decide(metrics, promoted, conf.promote_margin)
        tracker.log({f"eval/{k}": v for k, v in scores.items()}, conf.optim.steps)
        tracker.note("decision", f"{decision}: {reason}")
    return store.save_model(
        {
            **record,
            "metrics": metrics,
            "decision": decision,
            "decided": now(),
            "reason": reason,
            "ray": where,
            "ray_checkpoint": result.checkpoint.path,
        },
        weights,
    )


def held_out_scores(conf, data, weights: bytes, promoted: dict | None) -> dict:
    """The raw backbone's, the promoted adapter's and the new one's scores on the same held-out
    pairs: {raw_val_cycle: ..., adapter_val_cycle: ..., ...}."""
    models = {"raw": None}
    if promoted:
        models["promoted"] = load_checkpoint(Adapter, promoted["checkpoint"])
    models["adapter"] = load_checkpoint(Adapter, weights)
    compared = eval_mod.compare(data, models, conf.eval, conf.seed)
    return {f"{name}_{k}": v for name, scores in compared.items() for k, v in scores.items()}


def storage(conf, store: LabelStore) -> str:
    """Ray Train's folder (or URI) for the runs' checkpoints and event files."""
    return conf.checkpoint.storage or join(store.uri, "checkpoints")


def summary(record: dict) -> str:
    m = record["metrics"]
    lines = [
        f"model {record['model_id']}: {record['decision']} ({record['reason']})",
        f"  trained   {m['steps']} steps in {m['train_s']} s on {m['train_pairs']} pairs, final loss "
        f"{m['final_loss']:.3f}",
    ]
    row = "  ".join(
        f"{who} {m[f'{who}_val_cycle']:.3f}" for who in ("raw", "promoted", "adapter") if f"{who}_val_cycle" in m
    )
    lines.append(f"  {'val_cycle':18s} {row}")
    for kind in ("val", "truth_near", "truth_far", "train_kpt", "kpt", "kpt_geo", "kpt_aligned", "kpt_aligned_geo"):
        for a in ("0.05", "0.10"):
            key = f"{kind}_pck@{a}"
            if f"adapter_{key}" in m:
                row = "  ".join(
                    f"{who} {m[f'{who}_{key}']:.3f}" for who in ("raw", "promoted", "adapter") if f"{who}_{key}" in m
                )
                lines.append(f"  {key:18s} {row}")
    lines.append(f"  weights   {record['checkpoint']}")
    conf = OmegaConf.create(record["config"])
    lines += [
        f"  watch     {line}" for line in tracking.watch(conf.tracking, conf.checkpoint.storage, record["model_id"])
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    return run_command(
        default_conf, lambda conf: print(summary(train(conf)), flush=True) or 0, argv, aliases=STORE_ALIASES
    )


if __name__ == "__main__":
    sys.exit(main())
