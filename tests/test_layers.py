"""The layers of the codebase (README, Layout): imports point one way.

    stages (labelgen) -> store (labelgen.store) <- queries, trainer;  cluster, benchmarks on top
    tests' harnesses (tests.faults, tests.support) on top beside benchmarks, neither importing the other

The store knows files, the catalog and its schemas, never a stage or an evaluation; the
stages never import the trainer or a report; the trainer and the reports use labelgen's
library modules, never a command line (labelgen.run, a __main__). Every layer may use the
base: files (labelgen.io), a user's errors (labelgen.errors), configs and the console
(labelgen.config, .cli, .console). Benchmarks measure the product as it ships, so they use no
test support; fault injection and test support serve the tests, so nothing else imports them."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("labelgen", "trainer", "queries", "cluster", "benchmarks")
HARNESSES = ("tests.faults", "tests.support")  # checked like the packages; the test modules themselves are not
BASE = ("labelgen.io", "labelgen.errors", "labelgen.config", "labelgen.cli", "labelgen.console")
MAY_IMPORT = {  # layer -> the layers it may import (besides the base)
    "base": {"base"},
    "labelgen.store": {"labelgen.store"},
    "labelgen": {"labelgen", "labelgen.store"},
    "queries": {"queries", "labelgen", "labelgen.store"},
    "trainer": {"trainer", "labelgen", "labelgen.store"},
    "cluster": {"cluster", "labelgen", "labelgen.store", "trainer", "queries"},
    "benchmarks": {"benchmarks", "cluster", "labelgen", "labelgen.store", "trainer", "queries"},
    "tests": {"tests", "cluster", "labelgen", "labelgen.store", "trainer", "queries"},
}
COMMAND_LINES = ("labelgen.run",)  # entry points that are only a command line over a library module
TOP = ("cluster", "benchmarks", "tests")  # they drive the command lines themselves


def layer(module: str) -> str:
    """labelgen.store.lake -> labelgen.store; labelgen.chain -> labelgen; labelgen.io -> base."""
    if module in ("labelgen", "labelgen.__version__") or any(module == b or module.startswith(b + ".") for b in BASE):
        return "base"
    if module == "labelgen.store" or module.startswith("labelgen.store."):
        return "labelgen.store"
    return module.split(".")[0]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> list[str]:
    """Every first-party module `path` imports, at any depth of the file (relative imports
    resolved; `from x import y` gives x.y, which names y whether it is a module or not)."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out += [f"{mod}.{a.name}" for a in node.names]
    return [m for m in out if m.split(".")[0] in (*PACKAGES, "tests")]


def violations(root: Path = ROOT) -> list[str]:
    broken = []
    for path in (p for pkg in (*PACKAGES, *HARNESSES) for p in sorted((root / pkg.replace(".", "/")).rglob("*.py"))):
        name = module_name(path, root)
        mine = layer(name)
        for target in imports(path, root):
            theirs = layer(target)
            if theirs != "base" and theirs not in MAY_IMPORT[mine]:
                broken.append(f"{name} imports {target}: {mine} may not import {theirs}")
            other_package = target.split(".")[0] != name.split(".")[0]
            command_line = (
                any(target == c or target.startswith(c + ".") for c in COMMAND_LINES) or ".__main__" in target
            )
            if other_package and command_line and mine not in TOP:
                broken.append(f"{name} imports {target}: another package's command line")
    return broken


def test_imports_follow_the_layers():
    broken = violations()
    assert not broken, "\n".join(broken)


def test_a_broken_layer_is_found(tmp_path):
    """The check finds what it is there for, in a tree laid out like this one."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "labelgen" / "store").mkdir()
    (tmp_path / "labelgen" / "store" / "__init__.py").write_text("from .. import __version__\nfrom ..io import join\n")
    (tmp_path / "labelgen" / "chain.py").write_text("import torch\nfrom .store import LabelStore\n")
    assert violations(tmp_path) == []
    (tmp_path / "labelgen" / "store" / "lake.py").write_text("def f():\n    from ..chain import match_pair\n")
    (tmp_path / "labelgen" / "adapted.py").write_text("from trainer.adapter import Adapter\n")
    (tmp_path / "trainer" / "retrain.py").write_text("from labelgen import run\nfrom labelgen.run import label\n")
    assert violations(tmp_path) == [
        "labelgen.adapted imports trainer.adapter.Adapter: labelgen may not import trainer",
        "labelgen.store.lake imports labelgen.chain.match_pair: labelgen.store may not import labelgen",
        "trainer.retrain imports labelgen.run: another package's command line",
        "trainer.retrain imports labelgen.run.label: another package's command line",
    ]


def test_benchmarks_the_product_and_the_harnesses_stay_apart(tmp_path):
    """The harnesses import the product and each other; benchmarks and the product import no
    harness, and the harnesses no benchmark."""
    for pkg in (*PACKAGES, *HARNESSES):
        (tmp_path / pkg.replace(".", "/")).mkdir(parents=True)
    (tmp_path / "tests" / "faults" / "kills.py").write_text(
        "from labelgen import run\nfrom tests.support.tiny import labels_of\nfrom .postgres import PostgresServer\n"
    )
    assert violations(tmp_path) == []
    (tmp_path / "labelgen" / "run.py").write_text("def f():\n    from tests.faults import kills\n")
    (tmp_path / "benchmarks" / "growth.py").write_text("from tests.support.tiny import tiny_demo_args\n")
    (tmp_path / "tests" / "support" / "tiny.py").write_text("from benchmarks.report import table\n")
    assert violations(tmp_path) == [
        "labelgen.run imports tests.faults.kills: labelgen may not import tests",
        "benchmarks.growth imports tests.support.tiny.tiny_demo_args: benchmarks may not import tests",
        "tests.support.tiny imports benchmarks.report.table: tests may not import benchmarks",
    ]
