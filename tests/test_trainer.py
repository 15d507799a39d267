"""Training, registry and retraining on a tiny labelled demo store."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.tiny import tiny_demo_args
from labelgen.adapted import label_fingerprint
from labelgen.features import cache_uri, load_features
from labelgen.models import Adapter, load_checkpoint
from labelgen.store import LabelStore, now
from trainer.train import decide

FAST = ["optim.steps=6", "optim.pairs_per_step=2", "optim.log_every=2", "checkpoint.every=3"]


def test_promotion_needs_a_truth_free_score_higher_by_the_margin():
    m = {
        "raw_val_cycle": 0.43,
        "adapter_val_cycle": 0.52,
        "raw_train_kpt_pck@0.10": 0.52,
        "adapter_train_kpt_pck@0.10": 0.40,
    }
    assert decide(m, None, 0.02) == (
        "promoted",
        "adapter_val_cycle 0.5200 > 0.4300 + 0.02 of the raw backbone",
    )  # keypoints do not decide
    m["promoted_val_cycle"] = 0.51
    decision, reason = decide(m, {"model_id": "old"}, 0.02)
    assert decision == "rejected" and "0.5200 <= 0.5100 + 0.02 of promoted model old" in reason
    assert decide(m, {"model_id": "old"})[0] == "promoted"  # no margin: strictly higher is enough
    m["adapter_val_cycle"] = float("nan")
    assert decide(m, None) == ("rejected", "no held-out pairs to validate on")


def test_cycle_consistency_counts_source_cells_whose_match_maps_back():
    from omegaconf import OmegaConf

    from labelgen.features import ImageFeatures
    from trainer.evaluate import Matcher, cycle_score, default_conf

    # 1x4 strips of cells: A's cells are e0..e3, B's e1, e1, e2, e3. A0 matches nothing better than
    # B0 (the first max), which maps back to A1, one cell off; A1, A2, A3 map back to themselves.
    eye = torch.eye(4)

    class Bank(dict):
        def __call__(self, i):
            return self[i]

    def image(rows):
        return ImageFeatures(torch.stack(rows).reshape(1, 4, 4), torch.ones(1, 4, dtype=torch.bool), 1.0, 1, 4, 1)

    bank = Bank(a=image(list(eye)), b=image([eye[1], eye[1], eye[2], eye[3]]))
    bank.grid = lambda i: bank[i].grid().permute(2, 0, 1).float()
    matcher = Matcher(bank, None, OmegaConf.create(default_conf))
    assert matcher.cycle_consistency("a", "b", 1.0) == 1.0
    assert matcher.cycle_consistency("a", "b", 0.5) == 0.75
    assert np.isnan(cycle_score(matcher, [], OmegaConf.create(default_conf)))  # no held-out pair: no score


def test_an_adapter_s_cached_features_are_keyed_by_its_weights_not_only_its_id(tmp_path):
    for name, weights in (("a.pt", b"one"), ("b.pt", b"two"), ("c.pt", b"one")):
        (tmp_path / name).write_bytes(weights)
    a, b, c = ({"model_id": "m1", "checkpoint": str(tmp_path / n)} for n in ("a.pt", "b.pt", "c.pt"))
    assert label_fingerprint("fp", a) != label_fingerprint("fp", b)  # two stores' m1 sharing one cache
    assert (
        label_fingerprint("fp", a)
        == label_fingerprint("fp", c)
        == f"fp+adapter-m1-{hashlib.sha256(b'one').hexdigest()[:8]}"
    )
    assert label_fingerprint("fp", None) == "fp"


def test_labels_features_names_a_model_as_every_command_does(tmp_path, caplog):
    """latest | promoted | a model id, as trainer.evaluate's model=; adapter:<id> still works, with a warning."""
    from labelgen.adapted import resolve_model

    store = LabelStore(str(tmp_path / "store"))
    for model_id, status in (("m1", "promoted"), ("m2", "rejected")):
        store.save_model(
            {
                "model_id": model_id,
                "backbone_fingerprint": "fp",
                "decision": status,
                "created": now(),
                "decided": now(),
            },
            b"weights",
        )
    assert resolve_model(store, "backbone", "fp") is None
    assert resolve_model(store, "promoted", "fp")["model_id"] == "m1"
    assert resolve_model(store, "latest", "fp")["model_id"] == "m2"
    assert resolve_model(store, "m2", "fp")["model_id"] == "m2"
    assert resolve_model(store, "adapter:m1", "fp")["model_id"] == "m1" and "write labels.features=m1" in caplog.text
    with pytest.raises(ValueError, match="has no trained model m3"):
        resolve_model(store, "m3", "fp")
    with pytest.raises(ValueError, match="was trained on features fp"):
        resolve_model(store, "m1", "other")


@pytest.fixture(scope="module")
def labelled_store(tiny_demo, tmp_path_factory, run):
    store = tmp_path_factory.mktemp("trainstore") / "store"
    out = run(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store}", "run_id=first"])
    assert out.returncode == 0, out.stderr[-3000:]
    return str(store)


@pytest.mark.slow
def test_two_worker_training_checkpoints_registers_and_retrain_waits_for_new_labels(labelled_store, tiny_demo, run):
    out = run(
        [
            "trainer.train",
            f"data.store={labelled_store}",
            "scaling.workers=2",
            "scaling.cpus_per_worker=0.5",
            "model_id=m1",
            "data.val_split=none",
            *FAST,
        ]
    )
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
    assert con.execute("SELECT model_id, status, label_runs FROM models").fetchall() == [
        ("m1", "rejected", '["first"]')
    ]
    con.close()

    # nothing new since m1 trained on run 'first'
    retrain = [
        "trainer.retrain",
        "min_new_labels=1",
        f"train.data.store={labelled_store}",
        "train.data.val_split=none",
        "train.scaling.cpus_per_worker=1",
        *[f"train.{a}" for a in FAST],
    ]
    idle = run(retrain)
    assert idle.returncode == 0 and "nothing to do: 0 new labels since model m1 (rejected)" in idle.stdout
    scheduled = run(["trainer.schedule", "every_s=0", "max_runs=1", "--", *retrain[1:]])
    assert scheduled.returncode == 0

    relabel_with_the_adapter(labelled_store, tiny_demo, model, run)

    second = run(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={labelled_store}", "run_id=second"])
    assert second.returncode == 0, second.stderr[-3000:]
    trained = run([*retrain, "train.model_id=m2"])
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-4000:]
    assert "trained on" in trained.stdout and "since model m1" in trained.stdout
    m2 = next(m for m in store.models() if m["model_id"] == "m2")
    assert m2["label_runs"] == ["first", "relabel", "second"] and m2["parent"] is None


@pytest.mark.slow
def test_the_loop_relabels_with_each_promoted_model_and_stops_when_one_is_not(tiny_demo, tmp_path, run):
    store_uri = str(tmp_path / "store")
    out = run(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store_uri}", "run_id=first"])
    assert out.returncode == 0, out.stderr[-3000:]
    out = run(
        [
            "trainer.retrain",
            "min_new_labels=1",
            f"train.data.store={store_uri}",
            "relabel=[]",
            "rounds=3",
            "train.model_id=loop",
            *[f"train.{a}" for a in FAST],
        ]
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    store = LabelStore(store_uri)
    models = sorted(store.models(), key=lambda m: m["created"])
    con = store.connect()
    runs = dict(con.execute("SELECT run_id, label_features FROM runs WHERE status = 'committed'").fetchall())
    con.close()
    assert [m["model_id"] for m in models] == [f"loop-r{n}" for n in range(1, len(models) + 1)]
    for n, m in enumerate(models):
        relabelled = [r for r, f in runs.items() if f == label_fingerprint(f.split("+")[0], m)]
        if m["status"] != "promoted":  # the loop stops at the first model that is not promoted
            assert n == len(models) - 1 and not relabelled and f"loop stopped after round {n + 1}" in out.stdout
            break
        assert len(relabelled) == 1  # a promoted model relabels the collection once
        if n + 1 < len(models):  # and the next round learns from those labels
            assert models[n + 1]["label_runs"][-1] == relabelled[0]
    else:
        assert len(models) == 3
    assert out.stdout.count("relabelling run") == sum(m["status"] == "promoted" for m in models)


def relabel_with_the_adapter(store_uri: str, tiny_demo: str, m1: dict, run):
    """labels.features=m1 chains on m1's refined features, cached under their own
    fingerprint; the run keeps the backbone's fingerprint, which the next adapter trains on."""
    args = ["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store_uri}"]
    out = run([*args, "run_id=nothing", "labels.features=promoted"])
    assert out.returncode == 2 and "has no promoted adapter" in out.stderr
    out = run([*args, "run_id=relabel", "labels.features=m1"])
    digest = hashlib.sha256(Path(m1["checkpoint"]).read_bytes()).hexdigest()[
        :8
    ]  # of the weights: another m1 is another cache
    assert out.returncode == 0 and f"+adapter-m1-{digest} (labels.features; refined in" in out.stdout, out.stderr[
        -3000:
    ]
    store = LabelStore(store_uri)
    con = store.connect()
    rows = {
        r: (b, f) for r, b, f in con.execute("SELECT run_id, backbone_fingerprint, label_features FROM runs").fetchall()
    }
    (n,) = con.execute("SELECT count(*) FROM label_history WHERE run_id = 'relabel'").fetchone()
    image_id = con.execute("SELECT image_id FROM images WHERE run_id = 'relabel' LIMIT 1").fetchone()[0]
    con.close()
    fingerprint = rows["first"][0]
    assert rows["first"] == (fingerprint, fingerprint) and n > 0
    assert rows["relabel"] == (fingerprint, f"{fingerprint}+adapter-m1-{digest}")
    # the cached features are the adapter's output on the backbone's (float16 in the cache)
    raw, refined = (
        load_features(cache_uri(str(Path(store_uri) / "features"), fp, image_id))
        for fp in (fingerprint, f"{fingerprint}+adapter-m1-{digest}")
    )
    with torch.inference_mode():
        want = load_checkpoint(Adapter, m1["checkpoint"])(raw.grid().permute(2, 0, 1).float()[None])[0].permute(1, 2, 0)
    assert torch.equal(refined.stored, raw.stored) and torch.equal(refined.fg, raw.fg)
    assert torch.allclose(refined.feats.float(), want[refined.stored], atol=2e-3)
    assert (refined.scale, refined.stride, refined.width) == (raw.scale, raw.stride, raw.width)


@pytest.mark.slow
def test_training_refuses_unknown_runs(labelled_store, run):
    out = run(["trainer.train", f"data.store={labelled_store}", "data.runs=[nope]"])
    assert out.returncode == 2 and "label runs ['nope'] are not committed" in out.stderr
    out = run(["trainer.retrain", f"train.data.store={labelled_store}", "relabel=[labels.radious=3]"])
    assert out.returncode == 2 and "relabel=['labels.radious=3'] over run " in out.stderr
    assert "labels.radius" in out.stderr
    out = run(["trainer.retrain", f"train.data.store={labelled_store}", "relabel=labels.radius=3"])
    assert out.returncode == 2 and "give a list of labelgen.run overrides" in out.stderr
    out = run(["trainer.retrain", f"train.data.store={labelled_store}", "rounds=3"])
    assert out.returncode == 2 and "rounds=3 needs relabel=[...]" in out.stderr


@pytest.mark.slow
def test_relabelling_takes_the_trained_on_run_s_config(labelled_store):
    from omegaconf import OmegaConf

    from trainer.retrain import default_conf, relabel_conf

    conf = OmegaConf.merge(default_conf, {"train": {"data": {"store": labelled_store}}, "relabel": ["labels.radius=3"]})
    first = OmegaConf.create(LabelStore(labelled_store).run_record("first")["config"])
    got = relabel_conf(conf, "first", "m9")
    assert got.labels.features == "m9" and got.run_id is None and got.labels.radius == 3
    assert got.data.manifest == first.data.manifest and got.store == first.store
    assert got.pairing == first.pairing and got.labels.keep == first.labels.keep  # the demo's preset
