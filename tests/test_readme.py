"""README.md's runnable commands, in order and as written, from a scratch copy of the repository.

A fenced block right under the marker below is runnable. The test changes only the
data size (a smaller collection, fewer training steps) and runs every command with bash in
the copy's root, with relative paths, exactly as a new user would type it.
"""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- runnable: tests/test_readme.py runs these commands in order, as written, on a small demo -->"

SMALL_COLLECTION = (
    "'data.objects.categories=[chair,figure]' data.objects.dev_instances=2 data.objects.val_instances=2 "
    "data.objects.views=6"
)
SMALLER = [  # (what the command runs, the size knobs added to it)
    (r"^make run$", f'ARGS="{SMALL_COLLECTION}"'),
    (r"-m labelgen\.run\b.*data\.builtin=demo", "'data.demo.azimuths=[-30,0,30,60]' 'data.demo.elevations=[0]'"),
    (r"-m labelgen\.run\b", f"{SMALL_COLLECTION} sphere.steps=20"),
    (r"-m trainer\.train\b", "optim.steps=6"),
    (r"-m trainer\.(retrain|schedule)\b", "train.optim.steps=6"),  # schedule: after its `--`, for retrain
    (r"-m labelgen\.train_sphere\b", "sphere.steps=20"),
    (r"-m labelgen\.(evaluate|calibrate)\b", "max_pairs=4"),
]

pytestmark = pytest.mark.slow


def runnable_commands(text: str) -> list[str]:
    """The commands of the fenced blocks that follow the marker, continuation lines joined."""
    out, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        assert lines[i + 1].startswith("```"), f"README.md line {i + 2}: the marker must sit right above a code block"
        body = []
        for block_line in lines[i + 2 :]:
            if block_line.startswith("```"):
                break
            body.append(block_line)
        out += [c.strip() for c in re.sub(r"\\\n\s*", " ", "\n".join(body)).splitlines() if c.strip()]
    return out


def smaller(command: str) -> str:
    """The command with the data size knobs of its entry point appended (before its comment)."""
    bare = re.sub(r"\s+#.*$", "", command)
    for pattern, knobs in SMALLER:
        if re.search(pattern, bare):
            return f"{bare} {knobs}"
    return bare


def scratch_copy(dest: str) -> str:
    """The repository's files (tracked, or new and not ignored) with their times, and its virtualenv."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for f in files:
        if os.path.isfile(os.path.join(ROOT, f)):
            os.makedirs(os.path.dirname(os.path.join(dest, f)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))  # times kept: make sees the venv as current
    os.symlink(os.path.join(ROOT, ".venv"), os.path.join(dest, ".venv"))
    return dest


def test_the_marked_blocks_hold_the_flow_the_readme_promises():
    commands = runnable_commands(open(os.path.join(ROOT, "README.md")).read())
    flow = [
        "make run",
        "trainer.train",
        "trainer.evaluate",
        "trainer.retrain",
        "trainer.schedule",
        "labels.sphere=auto",
        "labelgen.train_sphere",
        "queries",
        "labelgen.evaluate",
        "labelgen.calibrate",
        "queries browse",
        "labelgen.export",
    ]
    for step in flow:
        assert any(step in c for c in commands), f"no runnable README command runs {step}"
    assert commands[0].split("#")[0].strip() == "make run"  # the flow starts from nothing


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Every runnable README command in a scratch copy: the copy, and per command its
    result (stops at the first failure)."""
    repo = scratch_copy(str(tmp_path_factory.mktemp("readme") / "repo"))
    # `make run` must not reinstall into the shared virtualenv from the copy
    assert subprocess.run(["make", "-q", ".venv/.installed"], cwd=repo).returncode == 0, (
        "run `make test` (it installs) first"
    )
    env, done = {**os.environ, "RAY_ADDRESS": ""}, []
    for command in runnable_commands(open(os.path.join(repo, "README.md")).read()):
        run = smaller(command)
        result = subprocess.run(["bash", "-c", run], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        done.append((command, run, result))
        if result.returncode:
            break
    return repo, done


def test_every_runnable_readme_command_works_as_written(readme_run):
    _, done = readme_run
    for command, run, result in done:
        log = result.stdout + result.stderr
        assert result.returncode == 0, f"README command failed: {command}\n(ran: {run})\n{log[-4000:]}"
        if command.startswith("make run"):  # a console a person reads: our lines, not Ray's
            assert len(log.splitlines()) < 30, log
            assert not re.search(r"logging_progress|core_worker\.cc|streaming_executor|Traceback", log), log
        if "duckdb -cmd" in command:  # the plain CLI reads the store the pipeline wrote
            assert re.search(r"│\s+[1-9]\d*\s+│", result.stdout), log
        if "labelgen.calibrate" in command:
            assert re.search(r"^recommended labels.keep=\S+: P@0.10", log, re.M), log
        if "trainer.train" in command:
            assert "Reporting training result" not in log and "State API" not in log, log
            assert re.search(r"^model \S+: (promoted|rejected)", log, re.M), log


def test_the_spherical_filter_is_measured_beside_chain_and_vote(readme_run):
    """The README's first run (no spherical filter) evaluated with the mapper trained
    later: `+ sphere` rows on the same pairs as the stored labels, a subset of them."""
    import json

    from labelgen.store import LabelStore

    repo, done = readme_run
    assert all(r.returncode == 0 for _, _, r in done)
    con = LabelStore(os.path.join(repo, "labelstore")).connect()
    first = con.execute("SELECT run_id FROM runs WHERE status = 'committed' ORDER BY finished LIMIT 1").fetchone()[0]
    con.close()
    out = os.path.join(repo, "eval.json")
    run = subprocess.run(
        [
            ".venv/bin/python",
            "-m",
            "labelgen.evaluate",
            "store=labelstore",
            f"run_id={first}",
            "max_pairs=4",
            "sphere=latest",
            f"output={out}",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.load(open(out))
    by_kind = {r["kind"]: r for r in report["by_kind"] if r["split"] == "val"}
    assert report["stored"] == "chain + vote" and set(by_kind) == {
        "raw NN",
        "mutual NN",
        "NN + cycle",
        "chain + vote",
        "+ sphere",
    }
    assert 0 < by_kind["+ sphere"]["labels"] <= by_kind["chain + vote"]["labels"]
    assert any(r["signal"] == "sphere_angle" for r in report["curves"])
