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

from omegaconf import OmegaConf

from labelgen.cli import run_command
from labelgen.pipeline import label, relabel_config
from labelgen.store import LabelStore

from . import train as train_mod
from .data import choose_runs

default_conf = {
    "min_new_labels": 100_000,  # train only when this many current labels are new to the last model (from runs it did
    # not learn from)
    "train": train_mod.default_conf,
    "relabel": None,  # after a promotion, relabel the latest trained-on run's collection with the new adapter, with
    # these labelgen.run overrides (a list; []: none); null: no relabel
    "rounds": 1,  # with relabel: train and relabel up to this many times, stopping at the first model not promoted
}


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
    if not OmegaConf.is_list(conf.relabel):
        raise ValueError(
            f"relabel={conf.relabel}: give a list of labelgen.run overrides, e.g. relabel=[] or "
            "relabel=[labels.keep=0.1]"
        )
    try:
        return relabel_config(
            LabelStore(conf.train.data.store, conf.train.data.catalog), run_id, model_id, conf.relabel
        )
    except ValueError as e:
        raise ValueError(f"relabel={list(conf.relabel)} over run {run_id}'s config: {e}") from None


def retrain(conf) -> tuple[str, dict | None]:
    n, runs, last = new_labels(conf)
    if conf.relabel is not None:
        relabel_conf(conf, runs[-1], "check")  # a bad override fails now, not after training
    since = f"since model {last['model_id']} ({last['status']})" if last else "and no model trained yet"
    if n < conf.min_new_labels:
        return f"nothing to do: {n:,} new labels {since}, retraining needs {conf.min_new_labels:,}", None
    conf.train.data.runs = runs
    record = train_mod.train(conf.train)
    return f"trained on {n:,} new labels {since}", record


def report(conf) -> int:
    if conf.rounds < 1:
        raise ValueError(f"rounds={conf.rounds}: give 1 or more")
    if conf.rounds > 1 and conf.relabel is None:
        raise ValueError(
            f"rounds={conf.rounds} needs relabel=[...] (e.g. relabel=[]): without relabelling, a round has no new "
            "labels to train on"
        )
    rounds, t0 = [], time.perf_counter()
    for n in range(1, conf.rounds + 1):
        this = OmegaConf.create(OmegaConf.to_container(conf))  # each round picks the runs and snapshot afresh
        if conf.train.model_id and conf.rounds > 1:
            this.train.model_id = f"{conf.train.model_id}-r{n}"
        message, record = retrain(this)
        tag = f"round {n}/{conf.rounds}: " if conf.rounds > 1 else ""
        print(tag + message, flush=True)
        if record:
            print(train_mod.summary(record), flush=True)
            rounds.append(record)
        if not (record and record["decision"] == "promoted" and conf.relabel is not None):
            break
        run_id = record["label_runs"][-1]
        print(f"{tag}relabelling run {run_id}'s collection with the promoted adapter {record['model_id']}", flush=True)
        code = label(relabel_conf(this, run_id, record["model_id"]))
        if code:
            return code
    if conf.rounds > 1:
        scores = " -> ".join(
            f"{r['model_id']} {r['metrics']['adapter_val_cycle']:.3f} ({r['decision']})" for r in rounds
        )
        if rounds and rounds[-1]["decision"] != "promoted":
            why = ": its model was not promoted"
        else:
            why = ": nothing to train" if len(rounds) < conf.rounds else ""
        print(
            f"loop stopped after round {len(rounds)}{why}; {time.perf_counter() - t0:.0f} s; val_cycle "
            f"{scores or 'none'}",
            flush=True,
        )
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, report, argv)


if __name__ == "__main__":
    sys.exit(main())
