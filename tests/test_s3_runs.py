"""Whole runs against a real S3-compatible server: commit, queries, kill and resume."""

import json
import os
import subprocess
import sys
import time

import boto3
import psutil
import pytest

from labelgen import run as run_mod
from labelgen.demo import build_demo
from labelgen.store import LabelStore
from tests.faults.s3 import FaultyS3Proxy
from tests.support.tiny import labels_of, tiny_demo_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def through_faults(tiny_demo, s3_server, run):
    """A tiny-demo run to the S3 server through a proxy that answers 1 request in 10 with 503
    and drops 1 in 10: the store, the run's output and the proxy's counts."""
    proxy = FaultyS3Proxy(os.environ["AWS_ENDPOINT_URL"], every=10)
    store = f"{s3_server}/whole"
    try:
        out = run(
            ["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store}", "run_id=s3run"],
            env={"AWS_ENDPOINT_URL": proxy.url},
        )
    finally:
        proxy.close()
    assert out.returncode == 0, out.stderr[-3000:]
    return store, out, proxy


@pytest.fixture(scope="module")
def undisturbed(tiny_store, tmp_path_factory):
    """The labels every S3 run of the tiny demo must reproduce: the session's undisturbed run's."""
    return labels_of(tiny_store(tmp_path_factory.mktemp("s3-reference") / "store"), "first")


def test_a_whole_run_through_s3_faults_equals_an_undisturbed_one_and_never_shows_a_secret(
    tiny_demo, s3_server, s3_secret, through_faults, undisturbed, run
):
    store, out, proxy = through_faults
    assert proxy.slow_downs >= 10 and proxy.drops >= 10, (proxy.requests, proxy.slow_downs, proxy.drops)
    keys = staged_keys("whole/")
    assert "whole/catalog.json" in keys and LabelStore(store).is_committed("s3run")
    assert sum(k.startswith("whole/features/") for k in keys) == 16  # the cache lives in the store: 8 images, 8 mirrors
    # retried, not lost or doubled: the same labels as the run that met no fault
    faulted = labels_of(store, "s3run")
    assert len(faulted) > 1000 and faulted.equals(undisturbed)

    # credentials: not in the logs, not in anything stored, not in an error message
    assert s3_secret not in out.stdout + out.stderr
    s3 = boto3.client("s3")
    for key in keys:
        if key.endswith((".json", ".parquet", ".yaml")):
            assert s3_secret.encode() not in s3.get_object(Bucket="labels", Key=key)["Body"].read(), key
    catalog = os.path.join(os.environ["XDG_CACHE_HOME"], "labelgen", "catalogs", "labels_whole.sqlite")  # s3:// default
    assert s3_secret.encode() not in open(catalog, "rb").read()
    con = LabelStore(store).connect()
    assert s3_secret not in con.execute("SELECT config FROM runs WHERE run_id = 's3run'").fetchone()[0]
    con.close()
    denied = run(["labelgen.run", *tiny_demo_args(tiny_demo), "store=s3://no-such-bucket/x"])
    assert denied.returncode != 0 and "no-such-bucket" in denied.stderr
    assert s3_secret not in denied.stdout + denied.stderr

    report = run(["queries", "precision", f"store={store}", "format=json"])
    assert report.returncode == 0, report.stderr[-3000:]
    rows = json.loads(report.stdout)
    assert {r["category"] for r in rows} == {"chelsea", "motorcycle"}
    assert all(r["p_10"] > 0.9 for r in rows if r["hops"] == 1)


def staged_keys(prefix):
    listing = boto3.client("s3").list_objects_v2(Bucket="labels", Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def kill_tree(proc):
    parent = psutil.Process(proc.pid)
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)


def test_a_killed_run_shows_nothing_and_its_resume_equals_an_undisturbed_run(tmp_path_factory, s3_server, capsys, run):
    manifest = build_demo(
        {"root": str(tmp_path_factory.mktemp("demo8")), "azimuths": [-45, -15, 15, 45], "elevations": [0]}
    )
    store = f"{s3_server}/resume"
    args = ["labelgen.run", *tiny_demo_args(manifest), f"store={store}", "labels.tuples_per_task=1", "new_only=false"]

    # the undisturbed reference (it also fills the feature cache, so the killed run reaches chaining fast)
    ref = run([*args, "run_id=reference"])
    assert ref.returncode == 0, ref.stderr[-3000:]

    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "run_id=victim"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not any("/images/" in k for k in staged_keys("resume/runs/victim/")):  # a category voted whole
        assert proc.poll() is None and time.time() < deadline, "the run ended before it staged anything"
        time.sleep(0.05)
    kill_tree(proc)
    staged = LabelStore(store).files("victim").done_categories()
    assert 1 <= len(staged) < 8, staged
    con = LabelStore(store).connect()
    assert con.execute("SELECT status FROM runs WHERE run_id = 'victim'").fetchone() == ("incomplete",)
    assert con.execute("SELECT count(*) FROM label_history WHERE run_id = 'victim'").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM images WHERE run_id = 'victim'").fetchone() == (0,)
    con.close()

    resumed = run([*args, "run_id=victim"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "categories already done" in resumed.stderr + resumed.stdout
    con = LabelStore(store).connect()
    n_ref, n_victim = (
        con.execute(f"SELECT count(*) FROM label_history WHERE run_id = '{r}'").fetchone()[0]
        for r in ("reference", "victim")
    )
    assert n_ref == n_victim > 1000
    differ = con.execute(
        "SELECT count(*) FROM ((SELECT * EXCLUDE run_id FROM label_history WHERE run_id = 'reference' "
        "EXCEPT ALL SELECT * EXCLUDE run_id FROM label_history WHERE run_id = 'victim') UNION ALL "
        "(SELECT * EXCLUDE run_id FROM label_history WHERE run_id = 'victim' "
        "EXCEPT ALL SELECT * EXCLUDE run_id FROM label_history WHERE run_id = 'reference'))"
    ).fetchone()
    assert differ == (0,)
    counts = dict(con.execute("SELECT run_id, (counts->>'tuples')::INT FROM runs").fetchall())
    assert counts["victim"] == counts["reference"]  # counts cover the categories done before the kill too
    con.close()

    assert run_mod.main([*args[1:], "run_id=victim"]) == 0  # in-process: these two stop before any work
    assert "already committed" in capsys.readouterr().out
    assert run_mod.main([*args[1:], "run_id=victim", "labels.radius=1"]) == 2
    assert "was started with another config" in capsys.readouterr().err


def test_training_checkpoints_to_s3(through_faults, run):
    store = through_faults[0]
    out = run(
        [
            "trainer.train",
            f"data.store={store}",
            "model_id=s3model",
            "data.val_split=none",
            "optim.steps=2",
            "optim.log_every=1",
            "checkpoint.every=2",
        ]
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    keys = staged_keys("whole/")
    assert any(k.startswith("whole/checkpoints/s3model/checkpoint_") and k.endswith("/adapter.pt") for k in keys)
    assert "whole/models/s3model/adapter.pt" in keys, [k for k in keys if "models" in k]
    (model,) = LabelStore(store).models()
    assert (
        model["model_id"] == "s3model" and model["snapshot"] == LabelStore(store).current_snapshot() - 2
    )  # then its own two rows


def test_a_run_on_three_nodes_without_a_shared_disk_gives_the_labels_of_one_node(
    undisturbed, tiny_demo, s3_server, run
):
    """A head and two worker nodes on this machine, each with a temporary folder of its own
    (where the chains keep their copies of features), the store and its feature cache on S3:
    the labels of the one-node run, chains on both workers, no copy left on any node."""
    import tempfile

    from ray.cluster_utils import Cluster

    homes = [tempfile.mkdtemp(prefix="labelgen-node-") for _ in range(3)]  # short: Ray's socket paths are limited
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "env_vars": {"TMPDIR": homes[0]}})
    try:
        for home in homes[1:]:
            cluster.add_node(num_cpus=1, env_vars={"TMPDIR": home})
        store = f"{s3_server}/nodes"
        args = [*tiny_demo_args(tiny_demo), f"store={store}", "run_id=lab", "labels.tuples_per_task=1"]
        out = run(["labelgen.run", *args, f"ray.address={cluster.address}"])
        assert out.returncode == 0, out.stderr[-3000:]
        assert labels_of(store, "lab").equals(undisturbed)
        con = LabelStore(store).connect()
        counts = json.loads(con.execute("SELECT counts FROM runs WHERE run_id = 'lab'").fetchone()[0])
        con.close()
        assert len(set(counts["feature_actors"])) >= 1 and counts["images"] == 8
        # each worker node read the features of its chunks from S3 once (one node alone reads each image once)
        assert 8 < counts["feature_reads"] <= counts["feature_loads"]
        assert all(
            not os.listdir(os.path.join(h, "labelgen-copies"))
            for h in homes
            if os.path.isdir(os.path.join(h, "labelgen-copies"))
        )
    finally:
        cluster.shutdown()
