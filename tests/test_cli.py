"""The command lines: `--help` everywhere, generated from the defaults; relative paths made
absolute once at the entry point; progress a person can read in a log file."""

import dataclasses
import importlib
import io
import os
import re
import subprocess
import sys

import pytest

from labelgen.config import StoreConf, describe, is_location, kinds, parse_overrides
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
    "queries.__main__": "default_conf",
    "labelgen.export.__main__": "default_conf",
    "benchmarks.__main__": "default_conf",
    "benchmarks.current_labels": "default_conf",
    "benchmarks.exchange": "default_conf",
    "benchmarks.growth": "default_conf",
    "benchmarks.pairing": "default_conf",
    "tests.faults.kills": "default_conf",
    "tests.faults.catalog_stress": "default_conf",
    "cluster.jobs": "default_conf",
    "cluster.gpu_check": "default_conf",
    "cluster.local_up": "default_conf",
}
READERS = ["labelgen.readers.folder", "labelgen.readers.pose3d", "labelgen.readers.spair"]


@dataclasses.dataclass
class Inner:
    b: float = 2.5  # a number
    c: int | None = None  # none given


@dataclasses.dataclass
class Outer:
    a: Inner = dataclasses.field(default_factory=Inner)
    d: list[int] = dataclasses.field(default_factory=lambda: [1, 2])  # a list


@pytest.mark.parametrize("name", list(KEY_VALUE))
def test_help_lists_every_key_with_its_default_and_what_it_means(name, capsys):
    module = importlib.import_module(name)
    assert module.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {name.removesuffix('.__main__')} [-h] [-v] [key=value ...]")
    lines = out.split("keys (", 1)[1].splitlines()[1:]
    defaults = getattr(module, KEY_VALUE[name])
    for key in kinds(defaults):
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}="))
        row = lines[at].split(None, 1)
        meaning = row[1] if len(row) > 1 else lines[at + 1].strip()  # a long default puts it on the next line
        assert meaning and "=" not in meaning.split()[0], f"{name}: {key} has no comment in its defaults"


def test_help_shows_the_values_the_code_runs_with():
    text = describe(Outer)
    assert [line.split(None, 1) for line in text.splitlines()] == [
        ["a.b=2.5", "a number"],
        ["a.c=null", "none given"],
        ["d=[1,2]", "a list"],
    ]
    from labelgen.pipeline import default_conf

    line = next(x for x in describe(default_conf).splitlines() if "features.flips=" in x)
    assert line.split(None, 1) == [
        "features.flips=True",
        "also cache features of the mirrored image (flip augmentation, pose alignment)",
    ]


@pytest.mark.parametrize("name", READERS)
def test_readers_answer_help_with_their_words(name, capsys):
    from labelgen.readers import reader_main

    module = importlib.import_module(name)
    assert reader_main(module.scan, ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {name} [-h] [-v] [key=value ...] ROOT OUT.parquet")
    assert module.__doc__.splitlines()[0] in out


def test_store_defaults_are_written_once_and_documented_where_they_are_inherited():
    from queries.__main__ import default_conf

    assert issubclass(default_conf, StoreConf) and "store" not in vars(default_conf)["__annotations__"]
    rows = dict(line.split(None, 1) for line in describe(default_conf).splitlines())
    assert rows["store=labelstore"] == "a folder or s3://bucket/prefix"
    assert rows["catalog=null"].startswith("the store's catalog: none = the one it was made with")


def test_flags_and_unknown_keys_of_the_tools_exit_2(tmp_path, capsys):
    from cluster import local_up
    from queries.__main__ import main as queries

    assert queries(["runs", "--store", str(tmp_path / "none"), "--format", "json"]) == 2  # flags: gone
    assert "['--store', '--format'] are not key=value overrides" in capsys.readouterr().err
    assert queries(["runs", "stor=x"]) == 2
    err = capsys.readouterr().err
    assert "the config has no key stor; did you mean store?" in err and "known keys: store, catalog, at, format" in err
    assert queries(["runs", "format=xml"]) == 2 and "format takes table, csv, json" in capsys.readouterr().err
    for at in ("x", "1.5"):  # a snapshot id: an integer, or null (the latest)
        assert queries(["runs", f"at={at}"]) == 2 and f"at={at}: at takes an integer" in capsys.readouterr().err
    assert queries([]) == 2 and "name a report" in capsys.readouterr().err
    assert queries(["list"]) == 0 and re.search(r"^labels_per_category +\S", capsys.readouterr().out, re.M)
    assert local_up.main([f"down={tmp_path}", "data.builtin=demo"]) == 2  # ours by name, the rest labelgen.run's
    assert f"{tmp_path} has no local_cluster.yaml" in capsys.readouterr().err
    assert local_up.main(["--down", str(tmp_path)]) == 2 and "not key=value overrides" in capsys.readouterr().err


def test_python_m_help_runs_as_a_user_types_it():
    done = subprocess.run([sys.executable, "-m", "trainer.train", "-h"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "data.store=labelstore" in done.stdout and not done.stderr.strip()


def test_help_loads_no_ray():
    """`--help` answers from the defaults: no entry point but the cluster's own tools loads Ray
    for it (the libraries are imported where they are used), in a fresh process."""
    names = [n for n in KEY_VALUE if not n.startswith(("cluster.", "tests."))]
    code = (
        "import contextlib, importlib, io, sys\n"
        f"for name in {names!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert importlib.import_module(name).main(['--help']) == 0, name\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout[-2000:] + done.stderr[-3000:]


def test_unknown_keys_and_bare_words_still_get_a_clear_error(capsys):
    from trainer import train

    assert train.main(["optim.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "stepz" in err and "optim.steps" in err
    assert train.main(["fast"]) == 2
    assert "not key=value overrides" in capsys.readouterr().err


def test_relative_locations_are_resolved_against_the_working_directory_once(tmp_path, monkeypatch):
    from labelgen.pipeline import default_conf

    monkeypatch.chdir(tmp_path)
    conf = parse_overrides(
        default_conf,
        [
            "store=out/labels",
            "data.manifest=m.parquet",
            "features.cache=s3://b/feats",
            "backbone.weights=~/w.safetensors",
        ],
    )
    assert conf.store == str(tmp_path / "out" / "labels")
    assert conf.data.manifest == str(tmp_path / "m.parquet")
    assert conf.data.demo.root == str(tmp_path / "data")  # defaults too
    assert conf.features.cache == "s3://b/feats"
    assert conf.backbone.weights == os.path.expanduser("~/w.safetensors")
    assert conf.pairing.pose == "auto"  # not a location: untouched
    from trainer.retrain import default_conf as retrain_conf

    nested = parse_overrides(retrain_conf, ["train.checkpoint.storage=ckpt"])
    assert nested.train.data.store == str(tmp_path / "labelstore") and nested.train.checkpoint.storage == str(
        tmp_path / "ckpt"
    )


def test_every_location_key_of_the_entry_points_is_declared_one():
    """A key that names a place must be declared a `Location` at its field, or Ray workers
    resolve it elsewhere; nothing else is one."""
    places = re.compile(r"(store|manifest|cache|weights|dir|path|root|storage|folder|file|output|spair)$|^out$")
    for name, attr in KEY_VALUE.items():
        for key, kind in kinds(getattr(importlib.import_module(name), attr)).items():
            assert is_location(kind) == bool(places.search(key.rsplit(".", 1)[-1])), f"{name}: {key}"


def test_progress_in_a_log_file_is_a_few_plain_lines(monkeypatch):
    out, clock = io.StringIO(), iter([0.0, 1.0, 40.0, 41.0, 90.0, 100.0])
    monkeypatch.setattr("labelgen.console.time.perf_counter", lambda: next(clock))
    with Progress(100, "features", "images", every_s=30.0, file=out) as bar:
        bar.update(10)  # t=1: too soon
        bar.update(40)  # t=40: a line
        bar.update(50)  # t=41: done, the closing line says it
    lines = out.getvalue().splitlines()
    assert lines == [
        "features: 50/100 images (50%), 1.2 images/s, about 40 s left",
        "features: 100/100 images in 90.0 s (1.1 images/s)",
    ]
    assert "\r" not in out.getvalue()


def test_a_mistake_is_one_line_and_exit_2_a_bug_says_where_in_one_line_and_v_shows_its_traceback(capsys):
    from labelgen.cli import run_command
    from labelgen.errors import UsageError

    def mistake(conf):
        raise UsageError("store nowhere: no label store there; run labelgen.run first")

    def bug(conf):
        return int("not a number")  # a ValueError that is no one's input

    assert run_command(Inner, mistake, [], announce=False) == 2
    assert capsys.readouterr().err == "error: store nowhere: no label store there; run labelgen.run first\n"
    assert run_command(Inner, bug, [], announce=False) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ValueError: invalid literal for int()")
    assert re.search(r"an unexpected error at tests/test_cli\.py:\d+; run again with -v for the traceback", err)
    with pytest.raises(ValueError, match="invalid literal"):
        run_command(Inner, bug, ["-v"], announce=False)


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy, of modules imported before
@pytest.mark.parametrize("package, least", [("benchmarks", 11), ("tests.faults", 4), ("tests.support", 1)])
def test_every_benchmarks_and_harness_module_answers_help_and_runs_nothing_then(package, least, monkeypatch, capsys):
    import pkgutil
    import runpy

    names = [f"{package}.{m.name}" for m in pkgutil.iter_modules(importlib.import_module(package).__path__)]
    assert len(names) >= least
    for name in names:
        monkeypatch.setattr(sys, "argv", [name, "--help"])
        with pytest.raises(SystemExit) as done:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        out = capsys.readouterr().out
        prog = name.removesuffix(".__main__")
        assert done.value.code == 0 and out.startswith(f"usage: python -m {prog} [-h]"), (name, out[:200])


def test_the_readme_key_table_holds_the_defaults_of_the_code():
    """Every key of the README's table is a key of labelgen.run, and a default the table
    writes as a value (a number, a word, none) is the code's; where the code's is none, the
    table may say what it resolves to."""
    from omegaconf import OmegaConf

    from labelgen.pipeline import default_conf

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    rows = re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|", readme, re.M)
    keys = set(kinds(default_conf))
    assert len(rows) > 20
    for cell, default in rows:
        names = re.findall(r"`([\w.*]+)`", cell)
        first = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        names = [n if "." in n or not first else first + n for n in names]  # `a.b` / `c`: a.c
        values = [v.strip() for v in default.split(" / ")] if len(names) > 1 else [default.strip()]
        for name, value in zip(names, values):
            known = [k for k in keys if k == name or name.endswith("*") and k.startswith(name[:-1])]
            assert known, f"README key {name} is not a key of labelgen.run"
            literal = re.match(r"`?(-?[\d.]+|none|true|false|[a-z][\w-]*)`?(?: \(|$)", value)
            if literal and len(known) == 1 and not value.startswith(("one ", "all ")):
                code = OmegaConf.select(OmegaConf.create(default_conf), name)
                if code is None and literal.group(1) != "none":
                    continue
                shown = literal.group(1)
                if not isinstance(code, str):
                    shown = {"none": None, "true": True, "false": False}.get(shown, shown)
                if isinstance(code, (int, float)) and not isinstance(code, bool):
                    shown = float(shown)
                assert shown == code, f"README says {name} = {value}; the code's default is {code}"
