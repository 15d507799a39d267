"""The command lines: `--help` everywhere, generated from the defaults; relative paths made
absolute once at the entry point; progress a person can read in a log file."""

import importlib
import io
import os
import re
import subprocess
import sys

import pytest

from labelgen.config import PATH_KEYS, describe, parse_overrides
from labelgen.console import Progress

KEY_VALUE = {  # entry point -> its defaults
    "labelgen.run": "default_conf",
    "labelgen.train_sphere": "default_conf",
    "labelgen.evaluate": "default_conf",
    "labelgen.calibrate": "default_conf",
    "trainer.train": "default_conf",
    "trainer.retrain": "default_conf",
    "trainer.evaluate": "main_conf",
    "trainer.schedule": "default_conf",
}
FLAGS = ["queries.__main__", "benchmarks.__main__", "cluster.jobs", "cluster.gpu_check", "cluster.local_up",
         "labelgen.readers.folder", "labelgen.readers.pose3d", "labelgen.readers.spair"]


def leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


@pytest.mark.parametrize("name", list(KEY_VALUE))
def test_help_lists_every_key_with_its_default_and_what_it_means(name, capsys):
    module = importlib.import_module(name)
    assert module.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {name} [-h] [-v] [key=value ...]")
    lines = out.split("keys (", 1)[1].splitlines()[1:]
    for key in leaves(getattr(module, KEY_VALUE[name])):
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}="))
        row = lines[at].split(None, 1)
        meaning = row[1] if len(row) > 1 else lines[at + 1].strip()  # a long default puts it on the next line
        assert meaning and "=" not in meaning.split()[0], f"{name}: {key} has no comment in its defaults"


def test_help_shows_the_values_the_code_runs_with():
    text = describe({"a": {"b": 2.5, "c": None}, "d": [1, 2]})
    assert re.findall(r"^\s+(\S+)", text, re.M) == ["a.b=2.5", "a.c=null", "d=[1,2]"]
    from labelgen import features

    line = next(x for x in describe({"features": features.default_conf}).splitlines() if "features.flips=" in x)
    assert line.split(None, 1) == ["features.flips=True", "also cache features of the mirrored image (flip augmentation, pose alignment)"]


@pytest.mark.parametrize("name", FLAGS)
def test_tools_with_flags_answer_help(name, capsys):
    module = importlib.import_module(name)
    main = getattr(module, "main", None)
    if main is None:  # the readers: one CLI over their read function
        from labelgen.readers import write_manifest

        main = lambda argv: write_manifest(module.read_manifest, argv)  # noqa: E731
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m ")
    assert re.findall(r"\(default: [^)]+\)", out) or name.startswith("labelgen.readers"), out


def test_python_m_help_runs_as_a_user_types_it():
    done = subprocess.run([sys.executable, "-m", "trainer.train", "-h"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "data.store=labelstore" in done.stdout and not done.stderr.strip()


def test_unknown_keys_and_bare_words_still_get_a_clear_error(capsys):
    from trainer import train

    assert train.main(["optim.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "stepz" in err and "optim.steps" in err
    assert train.main(["fast"]) == 2
    assert "not key=value overrides" in capsys.readouterr().err


def test_relative_locations_are_resolved_against_the_working_directory_once(tmp_path, monkeypatch):
    from labelgen.run import default_conf

    monkeypatch.chdir(tmp_path)
    conf = parse_overrides(default_conf, ["store=out/labels", "data.manifest=m.parquet", "features.cache=s3://b/feats",
                                          "backbone.weights=~/w.safetensors"])
    assert conf.store == str(tmp_path / "out" / "labels")
    assert conf.data.manifest == str(tmp_path / "m.parquet")
    assert conf.data.demo.root == str(tmp_path / "data")  # defaults too
    assert conf.features.cache == "s3://b/feats"
    assert conf.backbone.weights == os.path.expanduser("~/w.safetensors")
    assert conf.pairing.pose == "auto"  # not a location: untouched
    from trainer.retrain import default_conf as retrain_conf

    nested = parse_overrides(retrain_conf, ["train.checkpoint.storage=ckpt"])
    assert nested.train.data.store == str(tmp_path / "labelstore") and nested.train.checkpoint.storage == str(tmp_path / "ckpt")


def test_every_location_key_of_the_entry_points_is_known_as_one():
    """A new key that names a place must be added to PATH_KEYS, or Ray workers resolve it elsewhere."""
    places = re.compile(r"(store|manifest|cache|weights|dir|path|root|storage|folder|file|output|spair)$")
    for name, attr in KEY_VALUE.items():
        for key in leaves(getattr(importlib.import_module(name), attr)):
            leaf = key.rsplit(".", 1)[-1]
            if places.search(leaf):
                assert leaf in PATH_KEYS, f"{name}: {key}"


def test_progress_in_a_log_file_is_a_few_plain_lines(monkeypatch):
    out, clock = io.StringIO(), iter([0.0, 1.0, 40.0, 41.0, 90.0, 100.0])
    monkeypatch.setattr("labelgen.console.time.perf_counter", lambda: next(clock))
    with Progress(100, "features", "images", every_s=30.0, file=out) as bar:
        bar.update(10)  # t=1: too soon
        bar.update(40)  # t=40: a line
        bar.update(50)  # t=41: done, the closing line says it
    lines = out.getvalue().splitlines()
    assert lines == ["features: 50/100 images (50%), 1.2 images/s, about 40 s left",
                     "features: 100/100 images in 90.0 s (1.1 images/s)"]
    assert "\r" not in out.getvalue()
