"""`python -m trainer.retrain [min_new_labels=N] [train.key=value ...]`: train again when
enough new labels have landed, then promote or reject. Safe to run from cron: it exits 0
whether it trained or found nothing to do, and says which.

"New" means committed labels (of the backbone of the latest run) in runs that the
latest decided model (promoted or rejected) did not train on: a rejected model's data
does not trigger the same training again.
"""

import sys

from labelgen.cli import run_command
from labelgen.store import LabelStore

from . import train as train_mod
from .data import choose_runs

default_conf = {
    "min_new_labels": 100_000,  # train only when this many committed labels are new to the last model
    "train": train_mod.default_conf,
}


def new_labels(conf) -> tuple[int, list[str], dict | None]:
    """Labels not trained on yet, the runs to train on now, and the latest decided model."""
    store = LabelStore(conf.train.data.store)
    decided = [m for m in store.models() if m["status"] in ("promoted", "retired", "rejected")]
    last = max(decided, key=lambda m: m["decided"]) if decided else None
    con = store.connect()
    try:
        runs = choose_runs(con, conf.train.data.runs)
        counts = dict(con.execute("SELECT run_id, (counts->>'labels')::BIGINT FROM runs WHERE status = 'committed'").fetchall())
    finally:
        con.close()
    seen = set(last["label_runs"]) if last else set()
    return sum(counts[r] for r in runs if r not in seen), runs, last


def retrain(conf) -> tuple[str, dict | None]:
    n, runs, last = new_labels(conf)
    since = f"since model {last['model_id']} ({last['status']})" if last else "and no model trained yet"
    if n < conf.min_new_labels:
        return f"nothing to do: {n:,} new labels {since}, retraining needs {conf.min_new_labels:,}", None
    conf.train.data.runs = runs
    record = train_mod.train(conf.train)
    return f"trained on {n:,} new labels {since}", record


def report(conf) -> int:
    message, record = retrain(conf)
    print(message, flush=True)
    if record:
        print(train_mod.summary(record), flush=True)
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, report, argv)


if __name__ == "__main__":
    sys.exit(main())
