"""Training, registry and retraining on a tiny labelled demo store."""

from pathlib import Path

import pytest

from conftest import tiny_demo_args
from labelgen.store import LabelStore
from test_run import run
from trainer.train import decide

FAST = ["optim.steps=6", "optim.pairs_per_step=2", "optim.log_every=2", "checkpoint.every=3"]


def test_promotion_needs_a_strictly_better_held_out_score():
    m = {"raw_val_pck@0.10": 0.90, "adapter_val_pck@0.10": 0.95}
    assert decide(m, None)[0] == "promoted"
    assert "of the raw backbone" in decide(m, None)[1]
    m["promoted_val_pck@0.10"] = 0.95
    decision, reason = decide(m, {"model_id": "old"})
    assert decision == "rejected" and "0.9500 <= 0.9500 of promoted model old" in reason
    m["adapter_val_pck@0.10"] = float("nan")
    assert decide(m, None) == ("rejected", "no held-out pairs to validate on")


@pytest.fixture(scope="module")
def labelled_store(tiny_demo, tmp_path_factory):
    store = tmp_path_factory.mktemp("trainstore") / "store"
    out = run(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store}", "run_id=first"])
    assert out.returncode == 0, out.stderr[-3000:]
    return str(store)


@pytest.mark.slow
def test_two_worker_training_checkpoints_registers_and_retrain_waits_for_new_labels(labelled_store, tiny_demo):
    out = run(["trainer.train", f"data.store={labelled_store}", "scaling.workers=2", "scaling.cpus_per_worker=0.5",
               "model_id=m1", "data.val_split=none", *FAST])
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    store = LabelStore(labelled_store)
    (model,) = store.models()
    assert model["model_id"] == "m1" and model["label_runs"] == ["first"]
    # no held-out images (val_split=none): nothing to validate on, so it is not promoted
    assert model["status"] == "rejected" and model["reason"] == "no held-out pairs to validate on"
    assert model["metrics"]["steps"] == 6 and model["metrics"]["final_loss"] > 0
    store_path = Path(labelled_store) / "checkpoints" / "m1"
    checkpoints = sorted(p.name for p in store_path.iterdir() if p.is_dir() and p.name.startswith("checkpoint_"))
    assert len(checkpoints) == 2  # steps 3 and 6
    assert all((store_path / c / "adapter.pt").exists() for c in checkpoints)
    con = store.connect()
    assert con.execute("SELECT model_id, status, label_runs FROM models").fetchall() == [("m1", "rejected", '["first"]')]
    con.close()

    # nothing new since m1 trained on run 'first'
    retrain = ["trainer.retrain", "min_new_labels=1", f"train.data.store={labelled_store}", "train.data.val_split=none",
               "train.scaling.cpus_per_worker=1", *[f"train.{a}" for a in FAST]]
    idle = run(retrain)
    assert idle.returncode == 0 and "nothing to do: 0 new labels since model m1 (rejected)" in idle.stdout
    scheduled = run(["trainer.schedule", "every_s=0", "max_runs=1", "--", *retrain[1:]])
    assert scheduled.returncode == 0

    second = run(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={labelled_store}", "run_id=second"])
    assert second.returncode == 0, second.stderr[-3000:]
    trained = run([*retrain, "train.model_id=m2"])
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-4000:]
    assert "trained on" in trained.stdout and "since model m1" in trained.stdout
    m2 = next(m for m in store.models() if m["model_id"] == "m2")
    assert m2["label_runs"] == ["first", "second"] and m2["parent"] is None


@pytest.mark.slow
def test_training_refuses_unknown_runs(labelled_store):
    out = run(["trainer.train", f"data.store={labelled_store}", "data.runs=[nope]"])
    assert out.returncode == 2 and "label runs ['nope'] are not committed" in out.stderr
