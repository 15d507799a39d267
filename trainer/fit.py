"""The Ray Train side of `trainer.train`: the loop each worker runs (DDP, its shard of the
training pairs, rank 0's checkpoints) and the TorchTrainer that runs it. Kept apart so the
driver and `--help` load Ray Train only when a model is trained."""

import logging
import os
import tempfile

import numpy as np
import ray
import ray.train
import torch
from omegaconf import OmegaConf
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model
from ray.train.v2._internal.execution import context as train_context

from labelgen import console
from labelgen.io import filesystem, write_bytes
from labelgen.models import Adapter, checkpoint_bytes

from . import data as data_mod
from . import tracking
from .losses import clip_loss, dense_loss, sample

log = logging.getLogger("trainer")


def pair_batch_loss(model, logit_scale, bank, pairs, conf, rng) -> torch.Tensor:
    """Mean loss over a batch of pairs: both images of every pair go through one forward.
    A pair is mirrored (both images, and the labels' x) with probability `flip_prob`."""
    device = next(model.parameters()).device
    views = []
    for p in pairs:
        pick = rng.choice(len(p.src_xy), size=min(len(p.src_xy), conf.data.max_labels), replace=False)
        flip = rng.random() < conf.optim.flip_prob
        views.append((*bank.view(p.src, p.src_xy[pick], flip), *bank.view(p.tgt, p.tgt_xy[pick], flip)))
    grids = torch.stack([bank.grid(i) for src, _, tgt, _ in views for i in (src, tgt)]).to(device)
    out = model(grids)
    total = 0.0
    for k, (src, src_xy, tgt, tgt_xy) in enumerate(views):
        sxy = bank.to_grid(src, src_xy).to(device)
        txy = bank.to_grid(tgt, tgt_xy).to(device)
        fs, ft = sample(out[2 * k], sxy), sample(out[2 * k + 1], txy)
        total = (
            total
            + clip_loss(fs, ft, logit_scale)
            + conf.optim.dense_weight
            * dense_loss(fs, out[2 * k + 1], txy, conf.optim.temperature, conf.optim.label_noise)
        )
    return total / len(pairs)


def train_loop(config: dict):
    """One Ray Train worker: its shard of the training pairs, DDP, checkpoints from rank 0."""
    conf = OmegaConf.create(config["conf"])
    # Ray Train names this one logger by its file path, out of reach of RunConfig's LoggingConfig:
    # without this, every report prints a line.
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(conf.seed)
    data = data_mod.load_label_data(config["source"], conf.data.val_split)  # files the driver resolved
    bank = data_mod.FeatureBank(data.features)
    adapter = Adapter(data.groups, conf.model.out_dim, conf.model.dropout)
    model = prepare_model(adapter)
    opt = torch.optim.AdamW(adapter.parameters(), lr=conf.optim.lr, weight_decay=conf.optim.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=conf.optim.lr, total_steps=conf.optim.steps)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
        adapter.load_state_dict(state["adapter"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        start = state["step"]
    shard = data.train[rank::world]
    if not shard:
        raise ValueError(f"worker {rank} of {world} has no training pair: fewer pairs ({len(data.train)}) than workers")
    rng = np.random.default_rng([conf.seed, rank, start])
    recent = []
    # rank 0 logs every step (its batches' loss); a resumed run hides what the failed attempt logged after `start`
    where = config["tracking"] if rank == 0 else tracking.Tracking()
    with tracking.Tracker(where, ".train", purge_step=start or None) as tracker:
        for step in range(start, conf.optim.steps):
            model.train()
            batch = [
                shard[i] for i in rng.choice(len(shard), size=min(len(shard), conf.optim.pairs_per_step), replace=False)
            ]
            loss = pair_batch_loss(model, adapter.logit_scale, bank, batch, conf, rng)
            lr = sched.get_last_lr()[0]  # this step's
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            recent.append(loss.item())
            done = step + 1
            tracker.log({"train/loss": recent[-1], "train/lr": lr}, done)
            save = done % conf.checkpoint.every == 0 or done == conf.optim.steps
            if save or done % conf.optim.log_every == 0:
                metrics = {"step": done, "loss": float(np.mean(recent)), "lr": lr}
                recent = []
                if rank == 0:  # Ray forwards it to the driver's console
                    log.info("step %d/%d: loss %.3f, lr %.2g", done, conf.optim.steps, metrics["loss"], lr)
                tracker.flush()
                with tempfile.TemporaryDirectory() as d:
                    ray.train.report(
                        metrics, checkpoint=save_state(d, adapter, opt, sched, done) if save and rank == 0 else None
                    )


def save_state(folder: str, adapter, opt, sched, step: int) -> Checkpoint:
    """A checkpoint: what a restarted worker resumes from (state.pt), the weights the driver registers (adapter.pt)."""
    state = {"adapter": adapter.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(), "step": step}
    torch.save(state, os.path.join(folder, "state.pt"))
    write_bytes(os.path.join(folder, "adapter.pt"), checkpoint_bytes(adapter, step=step))
    return Checkpoint.from_directory(folder)


def fit(conf, source, model_id: str, where: tracking.Tracking):
    """The training itself, on Ray Train; its result (the last checkpoint, rank 0's last metrics)."""
    fs, path = filesystem(conf.checkpoint.storage)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"conf": OmegaConf.to_container(conf), "source": source, "tracking": where},
        scaling_config=ScalingConfig(
            num_workers=conf.scaling.workers,
            use_gpu=conf.scaling.use_gpu,
            resources_per_worker={"CPU": conf.scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=model_id,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=conf.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=conf.checkpoint.keep),
            logging_config=LoggingConfig(log_level=logging.getLevelName(console.ray_level())),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    return result
