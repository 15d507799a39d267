"""The layers of the codebase (README, Layout): imports point one way.

    stages (labelgen) -> store (labelgen.store) <- queries, trainer;  cluster, benchmarks on top
    tests' harnesses (tests.faults, tests.support) on top beside benchmarks, neither importing the other;
    the test modules import no benchmark (but the test of the benchmarks)

The store knows files, the catalog and its schemas, never a stage or an evaluation; the
stages never import the trainer or a report; the trainer and the reports use labelgen's
library modules, never a command line (labelgen.run, a __main__). Every layer may use the
base: files (labelgen.io), a user's errors (labelgen.errors), configs and the console
(labelgen.config, .cli, .console). Benchmarks measure the product as it ships, so they use no
test support; fault injection and test support serve the tests, so nothing else imports them.
Task code (the modules whose functions Ray runs in tasks and actors) reaches the store through
a run's files (labelgen.store.files) only: nothing it imports, at any depth, opens the catalog."""

import ast
import subprocess
import sys
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
# the modules whose functions Ray runs remotely (ray.remote, map_batches, map_groups, actor pools,
# Ray Train's workers)
TASKS = (
    "labelgen.tasks",
    "labelgen.vote",
    "labelgen.features",
    "labelgen.viewpoint",
    "labelgen.adapted",
    "labelgen.ray_utils",
    "labelgen.node_copy",
    "trainer.fit",
    "trainer.data",
)
CATALOG = (  # the catalog side of the store: its modules, and the names the package loads from them on use
    *(f"labelgen.store.{m}" for m in ("lake", "connections", "catalog", "tables", "migrate", "maintain", "check")),
    *(f"labelgen.store.{name}" for name in ("LabelStore", "code_version", "new_id", "now", "__main__")),
)


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


BENCHMARK_TESTS = ("tests.test_benchmarks",)  # the test of the benchmarks' yardstick: it imports what it tests


def test_modules_import_no_benchmark():
    """A test checks the product with the product and tests.support, never with a benchmark's
    code, except the test of the benchmarks themselves."""
    found = [
        f"{module_name(path)} imports {target}"
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        if module_name(path) not in BENCHMARK_TESTS
        for target in imports(path)
        if target.split(".")[0] == "benchmarks"
    ]
    assert not found, "\n".join(found)


def resolve(name: str, root: Path = ROOT) -> str:
    """The module a first-party import names: labelgen.store.RunFiles -> labelgen.store."""
    parts = name.split(".")
    while len(parts) > 1 and not (
        (root / Path(*parts)).with_suffix(".py").exists() or (root / Path(*parts) / "__init__.py").exists()
    ):
        parts.pop()
    return ".".join(parts)


def module_path(module: str, root: Path = ROOT) -> Path:
    path = root / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def catalog_reach(root: Path = ROOT) -> list[str]:
    """Import chains from a task module to the catalog side, e.g.
    'labelgen.vote -> labelgen.store.LabelStore'."""
    found, seen, todo = [], set(), [(m, m) for m in TASKS]
    while todo:
        module, chain = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for target in imports(module_path(module, root), root):
            if any(target == c or target.startswith(c + ".") for c in CATALOG):
                found.append(f"{chain} -> {target}")
                continue
            resolved = resolve(target, root)
            parents = [".".join(resolved.split(".")[:n]) for n in range(2, resolved.count(".") + 1)]
            todo += [(m, f"{chain} -> {m}") for m in (*parents, resolved) if m.split(".")[0] in PACKAGES]
    return sorted(found)


def test_task_code_cannot_reach_the_catalog():
    """Statically, through every import at any depth; and as Python loads them: importing every
    task module loads no catalog module (a package's __init__ runs first: labelgen.store's loads
    the catalog side only when a name of it is used)."""
    reach = catalog_reach()
    assert not reach, "\n".join(reach)
    code = (
        f"import sys\nfor m in {TASKS!r}: __import__(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith('labelgen.store')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert loaded.stdout.split() == ["['labelgen.store',", "'labelgen.store.files',", "'labelgen.store.schema']"]


def test_a_task_module_that_reaches_the_catalog_is_found(tmp_path):
    for pkg in ("labelgen", "labelgen/store", "trainer"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for name in TASKS:
        module_path(name, tmp_path).parent.mkdir(parents=True, exist_ok=True)
        module_path(name, tmp_path).write_text("from labelgen.store.files import RunFiles\n")
    (tmp_path / "labelgen" / "store" / "files.py").write_text("from .schema import LABEL_SCHEMA\n")
    (tmp_path / "labelgen" / "store" / "schema.py").write_text("")
    assert catalog_reach(tmp_path) == []
    (tmp_path / "labelgen" / "chain.py").write_text("from labelgen.store import LabelStore\n")
    (tmp_path / "labelgen" / "vote.py").write_text("from . import chain\n")
    assert catalog_reach(tmp_path) == ["labelgen.vote -> labelgen.chain -> labelgen.store.LabelStore"]
    (tmp_path / "trainer" / "source.py").write_text("from labelgen.store import LabelStore\n")
    (tmp_path / "trainer" / "data.py").write_text("from .source import resolve_source\n")  # the worker's data
    assert "trainer.data -> trainer.source -> labelgen.store.LabelStore" in catalog_reach(tmp_path)
    (tmp_path / "labelgen" / "store" / "schema.py").write_text("def f():\n    from .lake import LabelStore\n")
    deep = [c for c in catalog_reach(tmp_path) if "schema" in c]  # one chain: each module is walked once
    assert len(deep) == 1 and deep[0].endswith(
        " -> labelgen.store.files -> labelgen.store.schema -> labelgen.store.lake.LabelStore"
    )
