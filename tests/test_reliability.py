"""Faults, bad input and concurrency: runs finish, lose nothing, duplicate nothing, and say
what they skipped. (S3 faults and credentials: test_s3_runs.py; driver kill and resume:
test_s3_runs.py; read-only queries: test_store.py.)"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest
from omegaconf import OmegaConf
from PIL import Image

from labelgen import run as run_mod
from labelgen.store import LabelStore
from tests.support.tiny import labels_of, tiny_demo_args
from trainer.data import default_conf, load_label_data
from trainer.source import resolve_source


def start(args, head=None):
    """A label run in a process of its own, its output piped: on its own local Ray instance,
    or joining `head` (the session's `ray_head`) where the test is not about that instance."""
    return subprocess.Popen(
        [sys.executable, "-m", "labelgen.run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(head.env if head else {"RAY_ADDRESS": ""})},
    )


@pytest.fixture(scope="module")
def concurrent_runs(tiny_demo, tmp_path_factory):
    """Two label runs writing to one store at once, while a reader (the catalog, and the
    trainer's data loader) polls it; returns the store and what the reader saw."""
    store = str(tmp_path_factory.mktemp("shared") / "store")
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                con = LabelStore(store).connect()
            except FileNotFoundError:  # nothing written yet
                time.sleep(0.2)
                continue
            rows = con.execute(
                "SELECT r.run_id, r.status, (SELECT count(*) FROM label_history l WHERE l.run_id = r.run_id) "
                "FROM runs r"
            ).fetchall()
            con.close()
            trained_on, committed_after = None, None
            if any(status == "committed" for _, status, _ in rows):
                data = load_label_data(resolve_source(OmegaConf.merge(default_conf, {"store": store})), "none")
                trained_on = sorted(data.runs)
                con = LabelStore(store).connect()  # a run committed stays committed: check against a later look
                committed_after = {
                    r for (r,) in con.execute("SELECT run_id FROM runs WHERE status = 'committed'").fetchall()
                }
                con.close()
            seen.append((rows, trained_on, committed_after))
            time.sleep(0.3)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    procs = [start([*tiny_demo_args(tiny_demo), f"store={store}", "run_id=one"])]
    time.sleep(8)  # overlapping, not in step: one commits while two still writes
    procs.append(start([*tiny_demo_args(tiny_demo), f"store={store}", "run_id=two", "new_only=false"]))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    stop.set()
    reader.join(timeout=60)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return store, seen


@pytest.mark.slow
def test_two_runs_on_one_store_while_readers_only_ever_see_committed_runs(concurrent_runs):
    store, seen = concurrent_runs
    final = {r: len(labels_of(store, r)) for r in ("one", "two")}
    assert final["one"] > 1000
    assert labels_of(store, "one").equals(labels_of(store, "two"))  # same input, same config: same labels
    assert len(seen) >= 5
    for rows, trained_on, committed_after in seen:
        for run_id, status, n in rows:
            assert n in (0, final[run_id]), (run_id, status, n)  # never a part of a run
            assert (n > 0) == (status == "committed"), (run_id, status, n)
        committed = {r for r, status, _ in rows if status == "committed"}
        assert trained_on is None or committed <= set(trained_on) <= committed_after
    # the trainer did read while the other run was still writing
    assert any(trained_on and len(committed_after) == 1 for _, trained_on, committed_after in seen)


def bad_corpus(root, demo_manifest) -> str:
    """The tiny demo plus broken and odd files in a category of their own."""
    root.mkdir()
    df = pd.read_parquet(demo_manifest)
    base = os.path.dirname(demo_manifest)
    view = Image.open(os.path.join(base, df.uri[0])).convert("RGB")
    rows = []

    def add(name, azimuth=0.0, mask_uri=None, category="odd"):
        rows.append(
            {
                "image_id": name,
                "uri": str(root / name),
                "category": category,
                "azimuth": azimuth,
                "elevation": 0.0,
                "mask_uri": mask_uri,
                "split": "train",
            }
        )

    for i, az in enumerate([-45.0, -15.0, 15.0, 45.0]):  # odd but fine: must be used, not reported
        img = Image.open(os.path.join(base, df.uri[i])).convert("RGB")
        name = ["alpha.png", "grey.png", "deep.png", "large.jpg"][i]
        if name == "alpha.png":
            img = img.convert("RGBA")
            img.putalpha(200)
        elif name == "grey.png":
            img = img.convert("L")
        elif name == "deep.png":
            img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)  # 16-bit
        else:
            img = img.resize((4000, 4000))
        img.save(root / name)
        add(name, az)
    buf = root / "whole.jpg"
    view.save(buf, quality=90)
    (root / "truncated.jpg").write_bytes(buf.read_bytes()[: len(buf.read_bytes()) // 2])
    add("truncated.jpg", category="broken")
    (root / "empty.png").write_bytes(b"")
    add("empty.png", category="broken")
    add("missing.png", category="broken")
    Image.new("L", (10, 10), 255).save(root / "small_mask.png")
    view.save(root / "masked.png")
    add("masked.png", mask_uri=str(root / "small_mask.png"), category="broken")
    Image.new("L", (20000, 10000)).save(root / "bomb.png")  # 200 Mpx: PIL's decompression-bomb limit
    add("bomb.png", category="broken")
    add("nopose.png", azimuth=np.nan)
    view.save(root / "nopose.png")
    demo = df.assign(uri=[os.path.join(base, u) for u in df.uri], mask_uri=[os.path.join(base, m) for m in df.mask_uri])
    manifest = root / "manifest.parquet"
    pd.concat([demo, pd.DataFrame(rows)], ignore_index=True).to_parquet(manifest)
    return str(manifest)


@pytest.mark.slow
def test_a_killed_feature_actor_and_a_bad_input_corpus_leave_the_labels_of_an_undisturbed_run(
    concurrent_runs, tiny_demo, tmp_path, ray_head
):
    reference_store, _ = concurrent_runs
    manifest = bad_corpus(tmp_path / "corpus", tiny_demo)
    store = str(tmp_path / "store")
    # no viewpoint estimates: an image without a pose pairs by similarity (estimating costs a rendered collection)
    proc = start(
        [*tiny_demo_args(manifest), f"store={store}", "run_id=hurt", "features.batch_size=1", "pose.estimator=none"],
        ray_head,
    )
    cache, killed, deadline = os.path.join(store, "features"), [], time.time() + 300
    while not killed and time.time() < deadline and proc.poll() is None:
        done = sum(len(f) for _, _, f in os.walk(cache)) if os.path.exists(cache) else 0
        if done >= 2:
            for p in psutil.process_iter(["cmdline"]):
                if "FeatureWorker" in " ".join(p.info["cmdline"] or []):
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)
        time.sleep(0.05)
    out = proc.communicate(timeout=600)[0]
    assert killed, "no feature actor was found to kill"
    assert proc.returncode == 0, out[-3000:]

    demo_categories = ["chelsea", "motorcycle"]
    assert (
        labels_of(store, "hurt", demo_categories)
        .drop(columns="category")
        .equals(labels_of(reference_store, "one", demo_categories).drop(columns="category"))
    )
    con = LabelStore(store).connect()
    bad = dict(con.execute("SELECT image_id, error FROM bad_inputs WHERE run_id = 'hurt'").fetchall())
    assert (
        con.execute("SELECT count(*) FROM label_history WHERE run_id = 'hurt' AND category = 'odd'").fetchone()[0] > 100
    )
    con.close()
    expect = {
        "truncated.jpg": "truncated.jpg: broken or truncated image data",
        "empty.png": "empty.png: empty file",
        "missing.png": "missing.png: no such file",
        "masked.png": "masked.png \\(mask .*small_mask.png\\): mask is 10x10 but the image is 320x320",
        "bomb.png": "bomb.png: too large to decode safely: .*decompression bomb",
    }
    assert set(bad) == set(expect), bad
    for image_id, reason in expect.items():  # each names the file and the cause in words
        assert pd.Series([bad[image_id]]).str.contains(reason, case=False).item(), (image_id, bad[image_id])
        assert " object at 0x" not in bad[image_id]
    assert "5 bad (see bad_inputs)" in out
    # an image without a pose in a category paired by pose is no bad input: it pairs by feature similarity
    assert "images by similarity" in out and "nopose.png" not in bad


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda df: df.drop(columns="category"), r"missing column\(s\) \['category'\]"),
        (lambda df: df.assign(azimuth=["left"] * len(df)), "'left' is not a finite number of degrees"),
        (lambda df: df.assign(image_id=df.image_id.iloc[0]), "repeats row 0; ids must be unique"),
        (lambda df: df.assign(category=[7] * len(df)), "7 is not a string"),
    ],
)
def test_a_broken_manifest_is_refused_before_any_work(tiny_demo, tmp_path, capsys, change, message):
    df = pd.read_parquet(tiny_demo)
    df["uri"] = [os.path.join(os.path.dirname(tiny_demo), u) for u in df.uri]
    path = tmp_path / "manifest.parquet"
    change(df).to_parquet(path)
    assert run_mod.main([f"data.manifest={path}", f"store={tmp_path / 'store'}"]) == 2
    assert pd.Series([capsys.readouterr().err]).str.contains(message).item()
    assert not (tmp_path / "store").exists()  # nothing was started


def test_an_unknown_config_key_is_refused_with_the_known_ones(tiny_demo, tmp_path, capsys):
    assert run_mod.main([*tiny_demo_args(tiny_demo), f"store={tmp_path}", "labels.radiuss=2"]) == 2
    err = capsys.readouterr().err
    assert "radiuss" in err and "labels.radius" in err


class Payload:
    """Unpickling this would run a command: a checkpoint must never be able to."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/labelgen-pwned",))


@pytest.mark.parametrize("load", ["adapter", "sphere"])
def test_checkpoints_load_weights_only_and_refuse_code(tmp_path, load):
    import io as _io

    import torch

    from labelgen.models import Adapter, SphereMapper, load_checkpoint

    buf = _io.BytesIO()
    torch.save({"config": {}, "state": Payload()}, buf)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        load_checkpoint(Adapter if load == "adapter" else SphereMapper, buf.getvalue())
    assert not os.path.exists("/tmp/labelgen-pwned")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs, as root (CI runs as root)")
@pytest.mark.parametrize("stage, size, cache", [("features", "3m", False), ("vote", "300k", True)])
def test_a_full_disk_fails_in_words_leaves_nothing_visible_and_the_run_resumes_once_space_is_free(
    concurrent_runs, tiny_demo, tmp_path, ray_head, stage, size, cache
):
    reference, _ = concurrent_runs
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    try:
        store = disk / "store"  # with the feature cache on it, or elsewhere: then the run's own files fill it
        args = [
            *tiny_demo_args(tiny_demo),
            f"store={store}",
            "run_id=full",
            *([f"features.cache={tmp_path / 'cache'}"] if cache else []),
        ]
        proc = start(args, ray_head)
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 1, out[-3000:]
        error = [line for line in out.splitlines() if line.startswith("error: ")]
        assert len(error) == 1 and f"{disk}/" in error[0] and "no space left on its disk" in error[0], out[-3000:]
        assert re.search(r"\([\d,]+ bytes free, [\d,]+ needed for ", error[0]) and "Traceback" not in out
        assert not list(disk.rglob("*.tmp"))  # nothing half-written
        if (store / "catalog.json").exists():  # the catalog took the run's start: it is whole, and shows no label
            con = LabelStore(str(store)).connect()
            assert con.execute("SELECT count(*) FROM label_history").fetchone() == (0,)
            assert con.execute("SELECT status FROM runs").fetchall() in ([], [("incomplete",)], [("failed",)])
            con.close()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space is free again
        resumed = start(args, ray_head)
        out = resumed.communicate(timeout=600)[0]
        assert resumed.returncode == 0, out[-3000:]
        assert labels_of(str(store), "full").equals(labels_of(reference, "one"))
    finally:
        subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.slow
def test_a_postgresql_restart_during_a_run_is_waited_out_and_the_labels_are_those_of_an_undisturbed_run(
    concurrent_runs, tiny_demo, tmp_path, postgres, ray_head
):
    reference, _ = concurrent_runs
    store = tmp_path / "store"
    args = [*tiny_demo_args(tiny_demo), f"store={store}", "run_id=restart", f"catalog={postgres('restart')}"]
    proc = start(args, ray_head)
    deadline = time.time() + 300
    while not (store / "runs" / "restart" / "labels").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # the vote writes its labels: the commit comes next
    assert proc.poll() is None, "the run ended before the vote"
    postgres.stop()
    time.sleep(4)
    postgres.start()
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    assert labels_of(str(store), "restart").equals(labels_of(reference, "one"))
