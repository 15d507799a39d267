"""Training, registry and retraining on a tiny labelled demo store."""

import hashlib
import re
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from labelgen import run as run_mod
from labelgen.errors import UsageError
from labelgen.features import FeatureCache
from labelgen.io import join, list_files, read_bytes
from labelgen.models import Adapter, load_checkpoint
from labelgen.store import LabelStore, now
from tests.support.tiny import tiny_demo_args
from trainer import tracking
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
    cache = FeatureCache(str(tmp_path / "features"), "fp")
    assert cache.refined(a) != cache.refined(b)  # two stores' m1 sharing one cache
    assert cache.refined(a) == cache.refined(c)
    assert cache.refined(a).fingerprint == f"fp+adapter-m1-{hashlib.sha256(b'one').hexdigest()[:8]}"
    assert cache.refined(None) == cache and cache.refined(a).root == cache.root


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


def scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """A TensorBoard run's scalars (every event file in `logdir`, local or s3://) by tag, as
    (step, value) in step order."""
    from tensorboardX.proto.event_pb2 import Event

    out = {}
    for name in (path.rsplit("/", 1)[-1] for path in list_files(logdir)):
        data, i = read_bytes(join(logdir, name)), 0
        while i < len(data):  # TFRecord: the length (8 bytes), its CRC (4), the event, its CRC (4)
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = Event.FromString(data[i + 12 : i + 12 + n])
            i += n + 16
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return {tag: sorted(points) for tag, points in out.items()}


def test_metrics_reach_tensorboard_on_s3_and_mlflow_live_and_named_as_it_takes(s3_server, tmp_path, monkeypatch):
    """As trainer.train does: the driver opens the run, a worker logs steps into it, the driver
    adds held-out scores; event files on S3 are copied up at each flush, MLflow gets the same."""
    from mlflow import MlflowClient
    from omegaconf import OmegaConf

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 takes a folder only with it
    conf = OmegaConf.merge(tracking.default_conf, {"mlflow": tracking.mlflow_uri(str(tmp_path / "mlruns"))})
    logdir = f"{s3_server}/checkpoints/m1/tensorboard"
    with tracking.run(conf, logdir, "m1", {"optim": {"lr": 0.005}}, {"model_id": "m1"}) as driver:
        with tracking.Tracker(driver.where, ".train") as worker:
            for step in (1, 2, 3):
                worker.log({"train/loss": 1.0 / step}, step)
                worker.flush()  # as at a report: a user sees the steps so far
            worker.log({"train/loss": 0.25}, 4)
            assert scalars(logdir)["train/loss"][-1][0] == 3
        driver.log({"eval/adapter_kpt_pck@0.10": 0.5, "eval/adapter_val_cycle": float("nan")}, 4)
        driver.note("decision", "rejected: no held-out pairs to validate on")
    got = scalars(logdir)
    assert got["train/loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3)), (4, 0.25)]
    # "@" is no character of a name in TensorBoard or MLflow; a NaN (no held-out pair) is no point
    assert got["eval/adapter_kpt_pck_0.10"] == [(4, 0.5)] and "eval/adapter_val_cycle" not in got
    client = MlflowClient(conf.mlflow)
    run = client.get_run(driver.where.run_id)
    assert (run.info.run_name, run.info.status, run.data.params["optim.lr"]) == ("m1", "FINISHED", "0.005")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert run.data.metrics["eval/adapter_kpt_pck_0.10"] == 0.5
    assert run.data.tags["decision"] == "rejected: no held-out pairs to validate on"

    with pytest.raises(RuntimeError), tracking.run(conf, str(tmp_path / "tb"), "m2", {}, {}, driver.where) as failed:
        raise RuntimeError("training failed")
    run = client.get_run(failed.where.run_id)
    assert run.info.status == "FAILED" and run.data.tags[tracking.PARENT_TAG] == driver.where.run_id

    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed
    with pytest.raises(UsageError, match=r"tracking.mlflow=http://mlflow:5000: .* pip install 'labelgen\[mlflow\]'"):
        tracking.mlflow_client("http://mlflow:5000")


@pytest.fixture(scope="module")
def labelled_store(tiny_store, tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("trainstore") / "store")


@pytest.mark.slow
def test_two_worker_training_checkpoints_registers_and_retrain_waits_for_new_labels(
    labelled_store, tiny_demo, run, run_on_head, capsys
):
    out = run(
        [
            "trainer.train",
            f"store={labelled_store}",  # data.store=, as every command that reads a store spells it
            "scaling.workers=2",
            "scaling.cpus_per_worker=0.5",
            "model_id=m1",
            "data.val_split=none",
            *FAST,
        ]
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    # rank 0 logs each step once (not once per worker) beside the checkpoints; the summary says how to watch
    curves = scalars(str(Path(labelled_store) / "checkpoints" / "m1" / "tensorboard"))
    assert [s for s, _ in curves["train/loss"]] == [1, 2, 3, 4, 5, 6] and all(v > 0 for _, v in curves["train/lr"])
    assert f"watch     tensorboard --logdir {Path(labelled_store) / 'checkpoints'}  (run m1/tensorboard)" in out.stdout
    assert re.search(r"ray: local instance on 127.0.0.1, .*; dashboard http://127.0.0.1:\d+\n", out.stderr)
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

    # a copy of the store relabels with m1's weights, labels and trains at its new place; the original stays as it was
    files = {p: p.read_bytes() for p in Path(labelled_store).rglob("*") if p.is_file()}
    copied = shutil.copytree(labelled_store, Path(labelled_store).parent / "copied")
    store = LabelStore(str(copied))
    assert store.models()[0]["checkpoint"] == str(copied / "models" / "m1" / "adapter.pt")
    promoted = [*tiny_demo_args(tiny_demo), f"store={copied}", "run_id=nothing", "labels.features=promoted"]
    assert run_mod.main(promoted) == 2
    assert "has no promoted adapter" in capsys.readouterr().err  # in-process: refused before Ray
    relabel_with_the_adapter(str(copied), tiny_demo, store.models()[0], run_on_head)
    second = run_on_head(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={copied}", "run_id=second"])
    assert second.returncode == 0, second.stderr[-3000:]
    retrain = [a if not a.startswith("train.data.store=") else f"store={copied}" for a in retrain]
    trained = run([*retrain, "train.model_id=m2"])
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-4000:]
    assert "trained on" in trained.stdout and "since model m1" in trained.stdout
    m2 = next(m for m in store.models() if m["model_id"] == "m2")
    assert m2["label_runs"] == ["first", "relabel", "second"] and m2["parent"] is None
    assert {p: p.read_bytes() for p in Path(labelled_store).rglob("*") if p.is_file()} == files


@pytest.mark.slow
def test_the_loop_relabels_with_each_promoted_model_and_stops_when_one_is_not(tiny_store, tmp_path, run, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 takes a folder as its store only with it
    store_uri = tiny_store(tmp_path / "store")
    out = run(
        [
            "trainer.retrain",
            "min_new_labels=1",
            f"train.data.store={store_uri}",
            "relabel=[]",
            "rounds=3",
            "train.model_id=loop",
            f"train.tracking.mlflow={tmp_path / 'mlruns'}",
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
        relabelled = [r for r, f in runs.items() if f == FeatureCache("", f.split("+")[0]).refined(m).fingerprint]
        if m["status"] != "promoted":  # the loop stops at the first model that is not promoted
            assert n == len(models) - 1 and not relabelled and f"loop stopped after round {n + 1}" in out.stdout
            break
        assert len(relabelled) == 1  # a promoted model relabels the collection once
        if n + 1 < len(models):  # and the next round learns from those labels
            assert models[n + 1]["label_runs"][-1] == relabelled[0]
    else:
        assert len(models) == 3
    assert out.stdout.count("relabelling run") == sum(m["status"] == "promoted" for m in models)
    tracked_as_runs_of_the_loop(models, str(tmp_path / "store" / "checkpoints"), tmp_path / "mlruns")


def tracked_as_runs_of_the_loop(models: list[dict], storage: str, mlruns: Path):
    """Each round's model is a run (TensorBoard: <storage>/<model id>/tensorboard; MLflow: nested
    under the loop's run) with a loss per step and its held-out scores; the loop's run has each
    round's scores at its step, so one TensorBoard compares the rounds."""
    from mlflow import MlflowClient

    client = MlflowClient(mlruns.as_uri())
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("labelgen").experiment_id])}
    loop = runs.pop("loop")
    assert sorted(runs) == [m["model_id"] for m in models] and loop.info.status == "FINISHED"
    for m in models:
        run, score = runs[m["model_id"]], m["metrics"]["adapter_val_cycle"]
        assert run.data.tags[tracking.PARENT_TAG] == loop.info.run_id and run.info.status == "FINISHED"
        assert [h.step for h in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
        assert run.data.metrics["eval/adapter_val_cycle"] == score and run.data.tags["decision"].startswith(
            m["decision"]
        )
        curves = scalars(join(storage, m["model_id"], "tensorboard"))
        assert [s for s, _ in curves["train/loss"]] == [1, 2, 3, 4, 5, 6]
        assert curves["eval/adapter_val_cycle"] == [(6, pytest.approx(score))]
    want = [(n, pytest.approx(m["metrics"]["adapter_val_cycle"])) for n, m in enumerate(models, 1)]
    assert scalars(join(storage, "loop", "tensorboard"))["round/adapter_val_cycle"] == want
    history = client.get_metric_history(loop.info.run_id, "round/adapter_val_cycle")
    assert [(h.step, h.value) for h in history] == want


def relabel_with_the_adapter(store_uri: str, tiny_demo: str, m1: dict, run):
    """labels.features=m1 chains on m1's refined features, cached under their own
    fingerprint; the run keeps the backbone's fingerprint, which the next adapter trains on."""
    args = ["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store_uri}"]
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
        FeatureCache(str(Path(store_uri) / "features"), fp).load(image_id)
        for fp in (fingerprint, f"{fingerprint}+adapter-m1-{digest}")
    )
    with torch.inference_mode():
        want = load_checkpoint(Adapter, m1["checkpoint"])(raw.grid().permute(2, 0, 1).float()[None])[0].permute(1, 2, 0)
    assert torch.equal(refined.stored, raw.stored) and torch.equal(refined.fg, raw.fg)
    assert torch.allclose(refined.feats.float(), want[refined.stored], atol=2e-3)
    assert (refined.scale, refined.stride, refined.width) == (raw.scale, raw.stride, raw.width)


@pytest.mark.slow
def test_training_refuses_unknown_runs(labelled_store, capsys):
    from trainer import retrain, train

    assert train.main([f"data.store={labelled_store}", "data.runs=[nope]"]) == 2  # in-process: refused before Ray
    assert "label runs ['nope'] are not committed" in capsys.readouterr().err
    assert retrain.main([f"train.data.store={labelled_store}", "relabel=[labels.radious=3]"]) == 2
    err = capsys.readouterr().err
    assert "relabel=['labels.radious=3'] over run " in err and "labels.radius" in err
    assert retrain.main([f"train.data.store={labelled_store}", "relabel=labels.radius=3"]) == 2
    assert "relabel takes a list of text or null" in capsys.readouterr().err  # its declared type
    assert retrain.main([f"train.data.store={labelled_store}", "rounds=3"]) == 2
    assert "rounds=3 needs relabel=[...]" in capsys.readouterr().err


@pytest.mark.slow
def test_relabelling_takes_the_trained_on_run_s_config(labelled_store):
    from omegaconf import OmegaConf

    from trainer.retrain import default_conf, relabel_conf

    conf = OmegaConf.merge(default_conf, {"train": {"data": {"store": labelled_store}}, "relabel": ["labels.radius=3"]})
    first = OmegaConf.create(LabelStore(labelled_store).run_record("first")["config"])
    got = relabel_conf(conf, "first", "m9")
    assert got.labels.features == "m9" and got.run_id is None and got.labels.radius == 3
    assert got.data.manifest == first.data.manifest
    assert first.store != labelled_store == got.store  # a copy of the store that ran `first`: it relabels where it is
    assert got.pairing == first.pairing and got.labels.keep == first.labels.keep  # the demo's preset
