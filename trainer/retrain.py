"""`python -m trainer.retrain [min_new_labels=N] [train.key=value ...]`: train again when
enough new labels have landed, then promote or reject. Safe to run from cron: it exits 0
whether it trained or found nothing to do, and says which. With `relabel` set, a promoted
model relabels at once: `labelgen.run` with the config of the latest run it learnt from,
`labels.features=<model id>` and the overrides in `relabel`, so the next retrain learns
from labels made on the adapter's own features. `rounds=N` runs that loop on its own:
train, relabel, train again on the current labels (relabelled pairs superseded), until a
round's model is not promoted (the loop stopped paying) or N models are trained. The
promotion and the kept share of labels need no truth (trainer.train, labels.keep).

"New" means current labels (of the backbone of the latest run: per image pair, those of
the latest run that labelled it) from runs that the latest decided model (promoted or
rejected) did not train on: a relabelled pair is new, a repeated run adds nothing, and a
rejected model's data does not trigger the same training again.
"""

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from labelgen.cli import run_command
from labelgen.errors import UsageError
from labelgen.io import join
from labelgen.pipeline import label, relabel_config
from labelgen.store import LabelStore, new_id

from . import tracking
from . import train as train_mod
from .source import choose_runs

STORE_ALIASES = {k: f"train.{v}" for k, v in train_mod.STORE_ALIASES.items()}


@dataclass
class RetrainConf:
    min_new_labels: int = 100_000  # train only when this many current labels are new to the last model (from runs it
    # did not learn from)
    train: train_mod.TrainConf = field(default_factory=train_mod.TrainConf)
    relabel: list[str] | None = None  # after a promotion, relabel the latest trained-on run's collection with the new
    # adapter, with these labelgen.run overrides (a list; []: none); null: no relabel
    rounds: int = 1  # with relabel: train and relabel up to this many times, stopping at the first model not promoted


default_conf = RetrainConf


def new_labels(conf) -> tuple[int, list[str], dict | None]:
    """Labels not trained on yet, the runs to train on now, and the latest decided model."""
    store = LabelStore(conf.train.data.store, conf.train.data.catalog)
    decided = [m for m in store.models() if m["status"] in ("promoted", "retired", "rejected")]
    last = max(decided, key=lambda m: m["decided"]) if decided else None
    con = store.connect()
    try:
        runs = choose_runs(con, conf.train.data.runs)
        current = dict(con.execute("SELECT run_id, sum(labels) FROM current_pairs GROUP BY run_id").fetchall())
    finally:
        con.close()
    seen = set(last["label_runs"]) if last else set()
    return int(sum(current.get(r, 0) for r in runs if r not in seen)), runs, last


def relabel_conf(conf, run_id: str, model_id: str):
    """labelgen.run's config for relabelling run `run_id` with adapter `model_id`."""
    try:
        return relabel_config(
            LabelStore(conf.train.data.store, conf.train.data.catalog), run_id, model_id, conf.relabel
        )
    except ValueError as e:
        raise UsageError(f"relabel={list(conf.relabel)} over run {run_id}'s config: {e}") from None


def retrain(conf, loop: tracking.Tracking | None = None) -> tuple[str, dict | None]:
    n, runs, last = new_labels(conf)
    if conf.relabel is not None:
        relabel_conf(conf, runs[-1], "check")  # a bad override fails now, not after training
    since = f"since model {last['model_id']} ({last['status']})" if last else "and no model trained yet"
    if n < conf.min_new_labels:
        return f"nothing to do: {n:,} new labels {since}, retraining needs {conf.min_new_labels:,}", None
    conf.train.data.runs = runs
    record = train_mod.train(conf.train, loop=loop)
    return f"trained on {n:,} new labels {since}", record


def report(conf) -> int:
    if conf.rounds < 1:
        raise UsageError(f"rounds={conf.rounds}: give 1 or more")
    if conf.rounds > 1 and conf.relabel is None:
        raise UsageError(
            f"rounds={conf.rounds} needs relabel=[...] (e.g. relabel=[]): without relabelling, a round has no new "
            "labels to train on"
        )
    loop_id, t0 = conf.train.model_id or new_id(), time.perf_counter()
    with loop_run(conf, loop_id) as loop:
        code, rounds = run_rounds(conf, loop_id, loop)
    if code or conf.rounds == 1:
        return code
    scores = " -> ".join(f"{r['model_id']} {r['metrics']['adapter_val_cycle']:.3f} ({r['decision']})" for r in rounds)
    if rounds and rounds[-1]["decision"] != "promoted":
        why = ": its model was not promoted"
    else:
        why = ": nothing to train" if len(rounds) < conf.rounds else ""
    print(
        f"loop stopped after round {len(rounds)}{why}; {time.perf_counter() - t0:.0f} s; val_cycle {scores or 'none'}",
        flush=True,
    )
    for line in tracking.watch(conf.train.tracking, conf.train.checkpoint.storage, loop_id):
        print(f"  rounds    {line}", flush=True)
    return 0


def loop_run(conf, loop_id: str):
    """With rounds > 1, the loop's own run: every round's scores at its step (round/...), each
    round's model a run of its own (<loop id>-r<n>), nested under it in MLflow. One round: nowhere."""
    if conf.rounds == 1:
        return nullcontext(tracking.Tracker(tracking.Tracking(), ""))
    train = conf.train  # resolved as trainer.train does, for every round
    train.checkpoint.storage = train_mod.storage(train, LabelStore(train.data.store, train.data.catalog))
    train.tracking.mlflow = tracking.mlflow_uri(train.tracking.mlflow)
    logdir = join(train.checkpoint.storage, loop_id, "tensorboard")
    return tracking.run(train.tracking, logdir, loop_id, OmegaConf.to_container(conf), {"rounds": conf.rounds})


def run_rounds(conf, loop_id: str, loop: tracking.Tracker) -> tuple[int, list[dict]]:
    """Train, relabel with a promoted model, train again...; the exit code and the rounds' records."""
    rounds = []
    for n in range(1, conf.rounds + 1):
        this = OmegaConf.create(OmegaConf.to_container(conf))  # each round picks the runs and snapshot afresh
        if conf.rounds > 1:
            this.train.model_id = f"{loop_id}-r{n}"
        message, record = retrain(this, loop.where)
        tag = f"round {n}/{conf.rounds}: " if conf.rounds > 1 else ""
        print(tag + message, flush=True)
        if record:
            print(train_mod.summary(record), flush=True)
            rounds.append(record)
            promoted = float(record["decision"] == "promoted")
            loop.log({**{f"round/{k}": v for k, v in record["metrics"].items()}, "round/promoted": promoted}, n)
            loop.flush()
        if not (record and record["decision"] == "promoted" and conf.relabel is not None):
            break
        run_id = record["label_runs"][-1]
        print(f"{tag}relabelling run {run_id}'s collection with the promoted adapter {record['model_id']}", flush=True)
        code = label(relabel_conf(this, run_id, record["model_id"]))
        if code:
            return code, rounds
    return 0, rounds


def main(argv=None) -> int:
    return run_command(default_conf, report, argv, aliases=STORE_ALIASES)


if __name__ == "__main__":
    sys.exit(main())
