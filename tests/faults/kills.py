"""`python -m tests.faults.kills [kills=N] [catalog=sqlite|postgres|both] [seed=S]`, from the
repository's root: SIGKILL label runs at random instants, N times per catalog, and check the
store's promises each time (tests/test_kills.py runs a few kills at known instants).

A trial starts `python -m labelgen.run` on the tiny demo (2 photos x 4 views) with the
run_id of its episode, waits for the stage it aims at (the console and the store's files
tell: the run's first line, then feature files in the cache, the chains' node-local copies of
them, label files,
all label files), waits a random delay inside that stage (its length measured on the
catalog's reference run) and kills the driver's whole process tree: the driver and every
process its local `ray.init()` started (GCS, raylet, dashboard, agents, workers). Each
trial has its own RAY_TMPDIR, session and marker in the environment, so that only its own
processes are killed, never another Ray on the machine, and none may outlive the trial.
Where the kill landed is read from what exists after it:

    start      the run has no row yet (store creation, the run's first catalog row)
    features   its feature cache is not complete
    chains     features complete; this attempt has written no label file yet
    vote       this attempt has written a label file, not all of them
    commit     every label file is written, the run is not committed
    committed  the kill came after the commit

(a category's vote starts as soon as its own chains are done, so `vote` may overlap the
other category's chains). After each kill:

- the store opens (`LabelStore(store).connect()`) and label_history, label_pairs, images,
  runs, run_stats, bad_inputs and the views labels and current_pairs read;
- every run is visible whole or not at all: committed with the reference's rows, or none;
  label_history holds the rows it held before plus nothing or the whole run; no file is
  registered twice, none of a run that is not committed, none is missing;

and each episode (a run_id killed one or more times, its resumes included), finally resumed
to completion, commits labels, pairs and images equal to the reference run's, exactly, and
leaves no node-local feature copies nor `.tmp` file behind.

Episodes share the catalog's store (new_only=false: each run labels everything again);
features-stage kills first delete the store's feature cache; start-stage kills take a
fresh store. Beside the random kills (`sweeps=false` leaves these out): a driver that kills
itself before each statement of its commit's writer connection, inside its COMMIT and
right after it; one that kills a new store's first writer before each of its statements
(store creation and the run's first row); a reader (`python -m queries`, and a loop of
`connect()` queries) and a trainer (`python -m trainer.train`) killed mid-way, after which
the store opens and the trainer's rerun succeeds. A summary table ends the run.
"""

import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field

import psutil

from labelgen.config import Location
from tests.support.tiny import build_tiny_demo, labels_of, tiny_demo_args

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))  # where `tests` imports
TOKEN = "LABELGEN_KILLS_TOKEN"  # in the environment of every process a trial starts, with the trial's value
# one tuple per chain task and per vote partition, one image per feature batch: files appear one at a time through every
# stage, with instants between them to kill at; new_only=false: every run in the shared store labels everything again
KILL_ARGS = ["new_only=false", "labels.tuples_per_task=1", "labels.vote_tuples=1", "features.batch_size=1"]
STAGES = ("start", "features", "chains", "vote", "commit", "committed")  # where a kill landed
TABLES = ("label_history", "label_pairs", "images", "runs", "run_stats", "bad_inputs", "labels", "current_pairs")
FILE_TABLES = ("label_history", "label_pairs", "images")
RUN_FILE = re.compile(r"/runs/([^/]+)/")
CATALOGS = ("sqlite", "postgres", "both")


@dataclass
class KillsConf:
    kills: int = 50  # random kills per catalog (at least)
    catalog: str = "both"  # the catalogs to kill runs on: sqlite | postgres | both
    seed: int = 0  # of the delays and the episodes' plans
    fresh: int = 3  # episodes on a fresh store, aimed at the start
    sweeps: bool = True  # also the sweeps through a commit and a new store's first write; false: random kills,
    # readers, a trainer
    workdir: Location = "data/bench/kills"  # demo images and stores (removed first)
    json: str | None = None  # also write the trials and findings here


default_conf = KillsConf
PROBLEMS = ("corrupt", "partial", "double", "failed_resume", "differ", "unregistered", "tmp", "copies")


def say(*a):
    print(*a, flush=True)


# --- the demo and the command lines ------------------------------------------------------------------------------


def demo_args(manifest: str) -> list[str]:
    return [*tiny_demo_args(manifest), *KILL_ARGS]


# --- processes ---------------------------------------------------------------------------------------------------


class Proc:
    """A command of a trial: `python <argv>` in the repository, its output lines timed, in a
    session of its own, with its own RAY_TMPDIR (short: Ray's socket paths) and marker."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.tmp = tempfile.mkdtemp(prefix="lgk-", dir="/tmp")
        self.token = uuid.uuid4().hex
        self.lines: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self.created = time.time() - 1.0
        self.popen = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={
                **os.environ,
                "RAY_ADDRESS": "",
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_TMPDIR": self.tmp,
                TOKEN: self.token,
                **(env or {}),
            },
        )
        self.sid = self.popen.pid
        self.killed = None  # {"processes", "escaped", "at", "left"} once killed
        self.left_after_exit = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.popen.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def seen(self, pattern: str) -> float | None:
        """When a line matching `pattern` (a regex) was printed first, or None."""
        rx = re.compile(pattern)
        return next((t for t, line in list(self.lines) if rx.search(line)), None)

    def output(self) -> str:
        self.reader.join(timeout=10)
        return "\n".join(line for _, line in self.lines)

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def ours(self, p: psutil.Process) -> bool:
        """Is `p` a process of this command: in its session, or with its RAY_TMPDIR or marker?"""
        if p.pid == os.getpid():
            return False
        try:
            if p.create_time() < self.created:
                return False
            try:
                if os.getsid(p.pid) == self.sid:
                    return True
            except OSError:
                pass
            if self.tmp in " ".join(p.cmdline()):
                return True
            return p.environ().get(TOKEN) == self.token
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError):
            return False

    def session(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and self.ours(p):
                    out.append(p)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        return out

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> dict:
        """SIGKILL the process tree: snapshot it and stop every process in it at once (the
        instant of the kill: nothing is written after it), then the rest of the session,
        then SIGKILL them all; reap what is left."""
        frozen, snapshot, at = {}, self.tree(), time.monotonic()
        for rounds in range(20):
            found = snapshot if rounds == 0 else [*self.tree(), *self.session()]
            new = [p for p in found if p.pid not in frozen]
            if not new:
                break
            for p in new:
                try:
                    p.suspend()
                    frozen[p.pid] = p
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    pass
            if rounds == 0:
                at = time.monotonic()
        for p in frozen.values():
            try:
                p.kill()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        self.popen.wait(timeout=60)
        self.killed = {
            "processes": len(frozen),
            "escaped": len(set(frozen) - {p.pid for p in snapshot}),
            "at": at - self.t0,
        }
        self.killed["left"] = self.reap()
        return self.killed

    def reap(self, timeout: float = 60.0) -> int:
        """Kill whatever of the session is still alive; the count found. Raises if any outlives `timeout`."""
        found, deadline = set(), time.monotonic() + timeout
        while True:
            alive = self.session()
            if not alive:
                return len(found)
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of a trial outlived it: {[(p.pid, p.name()) for p in alive]}")
            for p in alive:
                found.add(p.pid)
                try:
                    p.kill()
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    pass
            time.sleep(0.1)

    def finish(self, timeout: float = 900.0) -> int:
        """Wait for the exit; what of the session is left after it (Ray's processes go with a
        driver that exits; a driver that killed itself leaves them) is counted and killed."""
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.popen.args[1:4]} did not finish in {timeout:.0f} s:\n{self.output()[-3000:]}")
        self.left_after_exit = self.reap(timeout=30.0)
        return rc

    def close(self):
        if not self.exited():
            self.kill()
        else:
            self.reap()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- what a store shows --------------------------------------------------------------------------------------------


@dataclass
class View:
    """What a reader sees: totals per table, per run its status and rows, the registered files."""

    exists: bool = True
    error: str | None = None
    totals: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)  # run_id -> {"status", "labels", "pairs", "images", "stats"}
    stray: list = field(default_factory=list)  # run_ids with rows but no committed run
    files: dict = field(default_factory=dict)  # table -> registered data files
    models: dict = field(default_factory=dict)  # model_id -> status

    def status(self, run_id: str) -> str | None:
        return (self.runs.get(run_id) or {}).get("status")

    def counts(self, run_id: str) -> tuple:
        r = self.runs.get(run_id) or {}
        return tuple(r.get(k, 0) for k in ("labels", "pairs", "images", "stats"))


RUNS_SQL = """
SELECT r.run_id, r.status, coalesce(h.n, 0), coalesce(p.n, 0), coalesce(i.n, 0), coalesce(s.n, 0)
FROM runs r
LEFT JOIN (SELECT run_id, count(*) AS n FROM label_history GROUP BY ALL) h USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n FROM label_pairs GROUP BY ALL) p USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n FROM images GROUP BY ALL) i USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n FROM run_stats GROUP BY ALL) s USING (run_id)
"""
STRAY_SQL = (
    " UNION ".join(f"SELECT DISTINCT run_id FROM {t}" for t in (*FILE_TABLES, "run_stats"))
    + " EXCEPT SELECT run_id FROM runs WHERE status = 'committed'"
)


def inspect(store: str) -> View:
    """Open the store as a reader does and read every table and view."""
    from labelgen.store import LabelStore

    try:
        con = LabelStore(store).connect()
    except FileNotFoundError:  # no catalog.json: no store yet
        return View(exists=False)
    except Exception as e:  # noqa: BLE001 (any failure to open is what is counted)
        return View(error=f"connect: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    view = View()
    try:
        view.totals = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        view.runs = {
            r: {"status": s, "labels": a, "pairs": b, "images": c, "stats": d}
            for r, s, a, b, c, d in con.execute(RUNS_SQL).fetchall()
        }
        view.stray = sorted(r for (r,) in con.execute(STRAY_SQL).fetchall())
        view.files = {
            t: [f for (f,) in con.execute(f"SELECT data_file FROM ducklake_list_files('lake', '{t}')").fetchall()]
            for t in FILE_TABLES
        }
        view.models = dict(con.execute("SELECT model_id, status FROM models").fetchall())
    except Exception as e:  # noqa: BLE001
        view.error = f"read: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    finally:
        con.close()
    return view


def judge(before: View, after: View, run_id: str, expect: tuple) -> list[tuple[str, str]]:
    """The promises a kill of `run_id`'s attempt broke, as (kind, words). `expect`: the
    (labels, pairs, images, run_stats) rows of a whole run."""
    if after.error:
        return [("corrupt", after.error)]
    if not after.exists:
        return [("corrupt", "the store vanished")] if before.exists and not before.error else []
    out = []
    for r, c in after.runs.items():
        counts = after.counts(r)
        if c["status"] == "committed" and counts != expect:
            out.append(
                ("partial", f"run {r} committed with (labels, pairs, images, stats) {counts}, a whole run {expect}")
            )
        elif c["status"] != "committed" and any(counts):
            out.append(("partial", f"run {r} is {c['status']} but shows {counts}"))
    out += [("partial", f"rows of run {r}, which is not committed") for r in after.stray]
    committed = {r for r, c in after.runs.items() if c["status"] == "committed"}
    for table, files in after.files.items():
        for f, n in collections.Counter(files).items():
            if n > 1:
                out.append(("double", f"{table}: {f} registered {n} times"))
        for f in set(files):
            m = RUN_FILE.search(f)
            if m and m.group(1) not in committed:
                out.append(("partial", f"{table}: {f} registered, its run is {after.status(m.group(1))}"))
            if "://" not in f and not os.path.exists(f):
                out.append(("corrupt", f"{table}: registered {f} is missing"))
    for r, c in before.runs.items():  # a kill of one run leaves the others as they were
        if c["status"] == "committed" and (after.status(r) != "committed" or after.counts(r) != before.counts(r)):
            out.append(
                ("partial", f"run {r} was committed with {before.counts(r)}, now {after.status(r)} {after.counts(r)}")
            )
    grew = after.status(run_id) == "committed" and before.status(run_id) != "committed"
    had = before.totals.get("label_history", 0)
    want = had + (expect[0] if grew else 0)
    if after.totals["label_history"] != want:
        out.append(
            (
                "partial",
                f"label_history holds {after.totals['label_history']:,} rows: {had:,} before plus "
                f"{'the whole run' if grew else 'nothing'} would be {want:,}",
            )
        )
    return out


@dataclass
class Files:
    """What an attempt of a run has left in the store's folder (and the feature cache)."""

    features: int = 0
    images: frozenset = frozenset()
    labels: frozenset = frozenset()
    written: frozenset = frozenset()  # (label file, mtime): a file written again counts as new
    copies: frozenset = frozenset()  # node-local copies of its features the chains made (features.NodeCopy)
    sqlite: bool = False
    marker: bool = False


def names(root: str) -> frozenset:
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in fs if f.endswith(".parquet")]
    return frozenset(out)


def stamps(root: str) -> frozenset:
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".parquet"):
                try:
                    out.add((os.path.relpath(os.path.join(d, f), root), os.stat(os.path.join(d, f)).st_mtime_ns))
                except FileNotFoundError:
                    pass
    return frozenset(out)


def copies(run_id: str) -> frozenset:
    """The node-local copies of features that the chains of `run_id`'s attempts made."""
    from labelgen.node_copy import COPIES

    out = set()
    for key in os.listdir(COPIES) if os.path.isdir(COPIES) else []:
        if key.startswith(f"{run_id}-"):
            out |= {
                (key, os.path.relpath(os.path.join(d, f), COPIES))
                for d, _, fs in os.walk(os.path.join(COPIES, key))
                for f in fs
            }
    return frozenset(out)


def staged(store: str, run_id: str, cache: str) -> Files:
    run = os.path.join(store, "runs", run_id)
    feats = sum(1 for _, _, fs in os.walk(cache) for f in fs if f.endswith(".safetensors"))
    labels = stamps(os.path.join(run, "labels"))
    return Files(
        feats,
        names(os.path.join(run, "images")),
        frozenset(n for n, _ in labels),
        labels,
        copies(run_id),
        os.path.exists(os.path.join(store, "catalog.sqlite")),
        os.path.exists(os.path.join(store, "catalog.json")),
    )


def leftovers(store: str, view: View) -> dict:
    """Files that should not be there once every run is done: `.tmp` files of writes cut short,
    staged files a committed run did not register."""
    tmp = [os.path.relpath(os.path.join(d, f), store) for d, _, fs in os.walk(store) for f in fs if f.endswith(".tmp")]
    registered = {f for files in view.files.values() for f in files}
    unregistered = []
    for r, c in view.runs.items():
        if c["status"] != "committed":
            continue
        run = os.path.join(store, "runs", r)
        for kind in ("labels", "pairs", "images"):
            unregistered += [
                f"{r}/{kind}/{n}"
                for n in names(os.path.join(run, kind))
                if os.path.join(run, kind, n) not in registered
            ]
    return {"tmp": sorted(tmp), "unregistered": sorted(unregistered)}


def rows(store: str, run_id: str, table: str) -> list[str]:
    """A run's rows of a table (some columns hold lists) without run_id, as sorted JSON lines."""
    from labelgen.store import LabelStore

    con = LabelStore(store).connect()
    try:
        got = con.execute(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ?", [run_id]).fetch_arrow_table()
    finally:
        con.close()
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in got.to_pylist())


def same_run(store: str, run_id: str, ref_store: str, ref_run: str) -> list[str]:
    """The tables in which a run's rows differ from the reference's: label_history (exactly,
    as the tests compare), label_pairs, images."""
    differ = [] if labels_of(store, run_id).equals(labels_of(ref_store, ref_run)) else ["label_history"]
    return differ + [t for t in ("label_pairs", "images") if rows(store, run_id, t) != rows(ref_store, ref_run, t)]


# --- one catalog's trials ------------------------------------------------------------------------------------------


@dataclass
class Reference:
    store: str
    run_id: str
    expect: tuple  # (labels, pairs, images, run_stats) rows of a whole run
    features: int  # cache files of the demo's images (and their mirrors)
    images: frozenset  # the run's staged images files
    labels: frozenset  # and label files
    fingerprint: str
    windows: dict  # stage -> seconds it lasted in the reference run


@dataclass
class Catalog:
    """One catalog kind's stores, reference and tallies."""

    kind: str  # sqlite | postgres
    root: str
    args: list[str]  # of every labelgen.run command
    new_catalog: object = None  # postgres: name -> catalog string
    cache_root: str | None = None  # the feature cache, when not the store's own (given in args)
    ref: Reference | None = None
    shared: str = ""  # the store the episodes share
    shared_args: list = field(default_factory=list)
    landed: collections.Counter = field(default_factory=collections.Counter)
    aimed: collections.Counter = field(default_factory=collections.Counter)  # (target, landed)
    problems: dict = field(default_factory=lambda: {k: [] for k in PROBLEMS})
    trials: list = field(default_factory=list)
    resumed: int = 0  # episodes resumed to completion and compared
    escaped: int = 0  # processes of a trial killed by their session, outside the tree's snapshot
    left_after_exit: int = 0  # processes left by a driver that exited normally
    readers: list = field(default_factory=list)
    trainers: list = field(default_factory=list)
    sweeps: collections.Counter = field(default_factory=collections.Counter)
    n_stores: int = 0

    def new_store(self, name: str) -> tuple[str, list[str]]:
        """A fresh store (and for PostgreSQL its own database); its catalog arguments."""
        self.n_stores += 1
        store = os.path.join(self.root, name)
        shutil.rmtree(store, ignore_errors=True)
        db = f"kills_{re.sub(r'[^a-z0-9]', '_', name.lower())}_{self.n_stores}"
        return store, ([f"catalog={self.new_catalog(db)}"] if self.kind == "postgres" else [])

    def cache(self, store: str) -> str:
        return os.path.join(self.cache_root or os.path.join(store, "features"), self.ref.fingerprint)

    def problem(self, kind: str, words: str):
        self.problems[kind].append(words)


def event_time(target: str, mode: str, proc: Proc, f: Files, f0: Files, ref: Reference, run_id: str) -> float | None:
    """When the stage aimed at began in this attempt (None: not yet). random: at its first
    sign (the kill waits a random part of its length); event: at a file of the stage (the kill
    follows at once)."""
    now = time.monotonic()
    if target == "start":
        return proc.seen(r"^backbone ")
    if target == "begun":  # the run's row is written
        return proc.seen(rf"^run {re.escape(run_id)}; if it stops")
    if target == "features":
        if mode == "event":
            return now if f.features > f0.features else None
        return proc.seen(rf"^run {re.escape(run_id)}; if it stops")
    if target == "chains":
        if mode == "event":
            return now if f.features >= ref.features and f.copies - f0.copies else None
        return now if proc.seen(r"^ray: ") and f.features >= ref.features else None
    if target == "vote":
        return now if f.written - f0.written else None
    if target == "commit" and f.labels >= ref.labels and f.images >= ref.images:
        if f0.labels >= ref.labels:  # all staged before: the attempt only commits, once it has looked
            return proc.seen(r"categories already done")
        return now
    return None


def landed_in(view: View, f: Files, f0: Files, ref: Reference, run_id: str) -> str:
    """Where a kill landed, by what exists after it."""
    if view.error:
        return "unknown"
    status = view.status(run_id) if view.exists else None
    if status is None:
        return "start"
    if status == "committed":
        return "committed"
    if f.features < ref.features:
        return "features"
    if f.labels >= ref.labels and f.images >= ref.images:
        return "commit"
    return "vote" if f.written - f0.written else "chains"


@dataclass
class Attempt:
    rc: int | None  # None: killed
    landed: str | None
    problems: list
    output: str
    timeline: dict  # seconds from the start: kill, event, and the lines and files seen
    view: View
    killed: dict | None


LINES = {"backbone": r"^backbone ", "ray": r"^ray: ", "resuming": "categories already done"}


def attempt(
    cat: Catalog,
    store: str,
    cargs: list[str],
    run_id: str,
    target: str | None = None,
    rng: random.Random | None = None,
    mode: str = "random",
    extra: list[str] = (),
    driver: list[str] | None = None,
    reference: bool = False,
) -> Attempt:
    """One start of the run: killed inside `target` (None: left to end by itself)."""
    ref = cat.ref
    cache = cat.cache(store) if ref else None
    before = inspect(store)
    f0 = staged(store, run_id, cache) if ref else Files()
    proc = Proc([*(driver or ["-m", "labelgen.run"]), *cat.args, *extra, f"store={store}", f"run_id={run_id}", *cargs])
    times, counts, t_kill, deadline = {}, collections.Counter(), None, time.monotonic() + 900
    try:
        while not proc.exited():
            now = time.monotonic()
            if reference:  # when each kind of file first and last appeared
                f = staged(store, run_id, os.path.join(store, "features"))
                for key, hit in (
                    ("sqlite", f.sqlite),
                    ("marker", f.marker),
                    ("feature", f.features > 0),
                    ("copy", bool(f.copies)),
                    ("label", bool(f.labels)),
                ):
                    if hit:
                        times.setdefault(key, now)
                for key, n in (("features", f.features), ("images", len(f.images)), ("labels", len(f.labels))):
                    if n > counts[key]:
                        counts[key], times[f"{key}_done"] = n, now
            elif target and t_kill is None:
                t = event_time(target, mode, proc, staged(store, run_id, cache), f0, ref, run_id)
                if t is not None:
                    times["event"] = t
                    stage = "commit_resumed" if target == "commit" and f0.labels >= ref.labels else target
                    window = ref.windows.get(stage, ref.windows["commit"] + 0.3)
                    t_kill = t + (rng.uniform(0.0, window) if mode == "random" else 0.0)
            if t_kill is not None and now >= t_kill:
                k = proc.kill()
                cat.escaped += k["escaped"]
                times["kill"] = proc.t0 + k["at"]
                break
            if now > deadline:
                proc.kill()
                raise RuntimeError(
                    f"run {run_id} neither ended nor reached {target} in 900 s:\n{proc.output()[-3000:]}"
                )
            time.sleep(0.005)
        rc = None if proc.killed else proc.finish()
        if rc == 0:
            cat.left_after_exit += proc.left_after_exit
        out = proc.output()
        for key, pattern in {
            **LINES,
            "run": rf"^run {re.escape(run_id)}; if it stops",
            "committed": rf"^run {re.escape(run_id)}: committed",
        }.items():
            if (t := proc.seen(pattern)) is not None:
                times[key] = t
        timeline = {k: v - proc.t0 for k, v in times.items()}
    finally:
        proc.close()
    after = inspect(store)
    problems = judge(before, after, run_id, ref.expect) if ref else []
    landed = landed_in(after, staged(store, run_id, cache), f0, ref, run_id) if rc is None and ref else None
    return Attempt(rc, landed, problems, out, timeline, after, proc.killed)


def record(cat: Catalog, a: Attempt, target: str, what: str):
    cat.landed[a.landed] += 1
    cat.aimed[(target, a.landed)] += 1
    for kind, words in a.problems:
        cat.problem(kind, f"{what}: {words}")
    cat.trials.append(
        {
            "what": what,
            "target": target,
            "landed": a.landed,
            "at": a.timeline.get("kill"),
            "processes": (a.killed or {}).get("processes"),
            "problems": a.problems,
        }
    )
    say(
        f"  [{cat.kind} {sum(cat.landed.values()):3d}] {what}: aimed at {target}, landed in {a.landed} "
        f"({a.timeline.get('kill', 0):.1f} s in, {(a.killed or {}).get('processes', 0)} processes): "
        + ("ok" if not a.problems else "; ".join(w for _, w in a.problems))
    )


def finish_episode(cat: Catalog, store: str, cargs: list[str], run_id: str, what: str, extra=()) -> dict:
    """Resume the run to completion: it commits, its rows equal the reference's, and nothing
    is left behind. What it found."""
    a = attempt(cat, store, cargs, run_id, extra=extra)
    result = {"rc": a.rc, "status": a.view.status(run_id), "differ": None, "output": a.output}
    if a.rc != 0 or a.view.status(run_id) != "committed":
        cat.problem(
            "failed_resume",
            f"{what}: the final resume exited {a.rc}, run {a.view.status(run_id)}: {' '.join(a.output[-600:].split())}",
        )
        say(f"  {what}: FAILED RESUME (exit {a.rc})\n{a.output[-1500:]}")
        return result
    for kind, words in a.problems:
        cat.problem(kind, f"{what} (final resume): {words}")
    if "resuming" in a.timeline and "committed" in a.timeline and "commit_resumed" not in cat.ref.windows:
        cat.ref.windows["commit_resumed"] = max(0.05, a.timeline["committed"] - a.timeline["resuming"])
    cat.resumed += 1
    result["differ"] = same_run(store, run_id, cat.ref.store, cat.ref.run_id)
    if result["differ"]:
        cat.problem("differ", f"{what}: {', '.join(result['differ'])} differ from the reference's")
    left = leftovers(store, a.view)
    result.update(left)
    result["copies"] = sorted(copies(run_id))
    if result["copies"]:
        cat.problem("copies", f"{what}: node-local copies of its features left after the commit")
    for f in left["unregistered"]:
        if f.startswith(f"{run_id}/"):
            cat.problem("unregistered", f"{what}: {f} staged, not registered")
    for t in left["tmp"]:
        if not any(t in p for p in cat.problems["tmp"]):
            cat.problem("tmp", f"{store}: {t}")
    say(
        f"  {what}: resumed to completion; "
        + (
            f"{', '.join(result['differ'])} DIFFER"
            if result["differ"]
            else "labels, pairs, images equal the reference's"
        )
        + ("; its node-local feature copies are left" if result["copies"] else "")
        + (f"; {len(left['tmp'])} .tmp files in the store" if left["tmp"] else "")
    )
    return result


def reference(cat: Catalog) -> Reference:
    """The catalog's uninterrupted run in a fresh store, which its episodes then share; the
    stages' lengths measured on it."""
    store, cargs = cat.new_store("shared")
    cat.shared, cat.shared_args = store, cargs
    a = attempt(cat, store, cargs, "reference", reference=True)
    if a.rc != 0:
        raise RuntimeError(f"the reference run failed ({a.rc}):\n{a.output[-3000:]}")
    (fingerprint,) = os.listdir(os.path.join(store, "features"))
    t = a.timeline
    f = staged(store, "reference", os.path.join(store, "features", fingerprint))
    windows = {
        "start": t["run"] - t["backbone"],
        "features": t["features_done"] - t["run"],
        "chains": t["images_done"] - max(t["ray"], t["features_done"]),
        "vote": t["labels_done"] - t["label"],
        "commit": t["committed"] - t["labels_done"],
    }
    ref = Reference(
        store,
        "reference",
        a.view.counts("reference"),
        f.features,
        f.images,
        f.labels,
        fingerprint,
        {k: max(0.05, v) for k, v in windows.items()},
    )
    say(
        f"  [{cat.kind}] reference run: {ref.expect[0]:,} labels, {ref.expect[1]} pairs, {ref.expect[2]} images; "
        f"{ref.features} feature files, {len(ref.labels)} label files; stages (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in ref.windows.items())
    )
    return ref


def plan(rng: random.Random) -> list[str]:
    """An episode's kills in pipeline order (a stage may be aimed at again: the resume does
    what is left; features again after the cache is deleted)."""
    return (
        ["features"] * rng.choice([0, 0, 1, 2])
        + ["chains"] * rng.choice([0, 1, 1, 2])
        + ["vote"] * rng.choice([0, 1, 1, 2])
        + ["commit"] * rng.choice([1, 1, 2, 3])
    )


def episode(
    cat: Catalog,
    run_id: str,
    targets: list[str],
    rng: random.Random | None = None,
    mode: str = "random",
    fresh: bool = False,
) -> dict:
    """Kill one run once per target (features: the feature cache deleted first), then resume
    it to completion and compare. Where each kill landed, and the final resume's findings."""
    store, cargs = cat.new_store(f"fresh-{run_id}") if fresh else (cat.shared, cat.shared_args)
    what = run_id + (" (fresh store)" if fresh else "")
    out = {"landed": [], "store": store}
    for i, target in enumerate(targets):
        if target == "features":
            shutil.rmtree(os.path.dirname(cat.cache(store)), ignore_errors=True)
        a = attempt(cat, store, cargs, run_id, target, rng, mode)
        step = f"{what} #{i + 1}"
        if a.rc is not None:  # ended by itself before the kill
            if a.rc != 0:
                cat.problem(
                    "failed_resume", f"{step}: exited {a.rc} before the kill: {' '.join(a.output[-600:].split())}"
                )
                say(f"  {step}: FAILED (exit {a.rc}) before the kill:\n{a.output[-1500:]}")
                out["failed"] = a.output
                return out
            say(f"  {step}: aimed at {target}, the run completed before the kill")
            break
        record(cat, a, target, step)
        out["landed"].append(a.landed)
        if a.view.error:  # nothing more to learn from this store
            return out
    out["final"] = finish_episode(cat, store, cargs, run_id, what)
    return out


# --- a driver that kills itself at a chosen statement --------------------------------------------------------------


def dying_driver():
    """`python -c 'from tests.faults.kills import dying_driver; dying_driver()' POINT [labelgen.run args]`:
    the pipeline, SIGKILLed by itself at POINT (it prints `dying at POINT: ...` first):

    commit:<k>            before the k-th statement of the commit's writer connection
    commit:mid:<s>        <s> seconds into its COMMIT (no kill if it returns first)
    commit:after          once its COMMIT returned
    commit:probe          list the commit's statements; die before COMMIT
    <phase>:before:<SQL>  before the first statement (of that connection) that starts with <SQL>
    create:<k>            before the k-th statement of the process's first writer connection:
                          on a new store, its extensions, ATTACH (which creates the catalog),
                          tables and views, then the run's first row
    create:marker         before catalog.json is written (after the tables and views)
    create:mid:<s>        <s> seconds into that connection's ATTACH
    create:midcommit:<s>  <s> seconds into the COMMIT of its tables and views
    create:probe          list that connection's statements; die when it closes
    """
    from labelgen import run
    from labelgen.store import catalog as cat
    from labelgen.store import lake

    point = sys.argv[1]
    phase, _, arg = point.partition(":")
    state = {"armed": False, "done": False, "n": 0, "in_commit": False}

    def die(why: str):
        print(f"dying at {point}: {why}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    class Connection:
        """A DuckDB connection whose statements are counted, to die at one."""

        def __init__(self, con):
            self._con = con

        def __getattr__(self, name):
            return getattr(self._con, name)

        def execute(self, sql, *args, **kwargs):
            state["n"] += 1
            n, head = state["n"], " ".join(str(sql).split())[:70]
            if arg == "probe":
                print(f"statement {n}: {head}", flush=True)
                if phase == "commit" and head.startswith("COMMIT"):
                    die("before COMMIT")
            if arg.isdigit() and n == int(arg):
                die(f"before statement {n}: {head}")
            if arg.startswith("before:") and head.startswith(arg[len("before:") :]):
                die(f"before statement {n}: {head}")
            timer = None
            mid = {"mid": "COMMIT" if phase == "commit" else "ATTACH", "midcommit": "COMMIT"}.get(arg.split(":")[0])
            if mid and head.startswith(mid):
                timer = threading.Timer(float(arg.split(":")[1]), die, [f"{arg.split(':')[1]} s into {head}"])
                timer.start()
            out = self._con.execute(sql, *args, **kwargs)
            if timer is not None:
                timer.cancel()
                print(f"not dying at {point}: {head} returned first", flush=True)
            if arg == "after" and head.startswith("COMMIT"):
                die("after COMMIT")
            return out

        def close(self):
            self._con.close()
            if arg == "probe" and phase == "create":
                die("when the connection closed")

    connect, attach, commit, write_bytes = cat.extensions.connect, cat.attach, lake.LabelStore.commit, cat.write_bytes

    def armed_connect():
        con = connect()
        if state["armed"] and not state["done"]:
            state["done"] = True
            return Connection(con)
        return con

    def armed_attach(*args, **kwargs):
        state["armed"] = bool(kwargs.get("create")) and (phase == "create" or state["in_commit"])
        try:
            return attach(*args, **kwargs)
        finally:
            state["armed"] = False

    def armed_commit(self, *args, **kwargs):
        state["in_commit"] = True
        return commit(self, *args, **kwargs)

    def marker(uri, data):
        if point == "create:marker" and uri.endswith("catalog.json"):
            die("before catalog.json")
        return write_bytes(uri, data)

    cat.extensions.connect, cat.attach, cat.write_bytes = armed_connect, armed_attach, marker
    lake.LabelStore.commit = armed_commit
    sys.exit(run.main(sys.argv[2:]))


DRIVER = ["-c", "import sys; from tests.faults.kills import dying_driver; dying_driver()"]


def died_at(output: str) -> str:
    """Where a dying driver died ("before statement 12: CREATE ...", "after COMMIT"), or "did not die"."""
    return next((line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("dying at ")), "did not die")


def commit_sweep(
    cat: Catalog, rng: random.Random, run_id: str = "sweep", points: list[str] | None = None, mids: int = 3
) -> dict:
    """A run whose driver dies before each statement of its commit's writer connection (from
    its ATTACH on), inside its COMMIT (random delays), right after it; then resumed to
    completion and compared."""
    store, cargs = cat.shared, cat.shared_args
    probe = attempt(cat, store, cargs, run_id, driver=[*DRIVER, "commit:probe"])
    statements = re.findall(r"^statement (\d+): (.*)$", probe.output, re.M)
    if probe.rc != -signal.SIGKILL or not statements:
        raise RuntimeError(f"the commit probe did not die in its commit ({probe.rc}):\n{probe.output[-3000:]}")
    first = int(next(n for n, s in statements if s.startswith("ATTACH")))
    last = int(next(n for n, s in statements if s.startswith("COMMIT")))
    say(
        f"  [{cat.kind}] {run_id}: its commit's writer connection runs {last} statements: "
        + ", ".join(f"{n}. {s.split('(')[0].split(' AS ')[0][:30]}" for n, s in statements)
    )
    cat.sweeps[("commit:probe (before COMMIT)", probe.view.status(run_id))] += 1
    todo = points or [f"commit:{k}" for k in range(first, last + 1)]
    todo += [f"commit:mid:{rng.uniform(0.0, 0.02 if cat.kind == 'sqlite' else 0.06):.4f}" for _ in range(mids)]
    todo += ["commit:after"]
    seen = []
    for point in todo:
        a = attempt(cat, store, cargs, run_id, driver=[*DRIVER, point])
        status = a.view.status(run_id)
        key = re.sub(r":[\d.]+$", "", point) if ":mid:" in point else point
        if ":mid:" in point and died_at(a.output) == "did not die":
            key += " (returned first)"
        cat.sweeps[(key, status)] += 1
        seen.append((point, died_at(a.output), status, a.problems))
        for kind, words in a.problems:
            cat.problem(kind, f"{run_id} {point}: {words}")
        say(
            f"  [{cat.kind}] {run_id} died {died_at(a.output)}: run {status}, "
            + ("ok" if not a.problems else "; ".join(w for _, w in a.problems))
        )
        if status == "committed":
            break
    return {"statements": statements, "points": seen, "final": finish_episode(cat, store, cargs, run_id, run_id)}


def create_sweep(cat: Catalog, rng: random.Random, points: list[str] | None = None, probe: bool = True) -> list[dict]:
    """New stores whose first writer dies at each point (store creation, the run's first row);
    each then resumed to completion (features from the shared store's cache) and compared."""
    extra = [f"features.cache={os.path.join(cat.shared, 'features')}"]
    was, cat.cache_root = cat.cache_root, os.path.join(cat.shared, "features")
    out = []
    try:
        if points is None:
            store, cargs = cat.new_store("create-probe")
            a = attempt(cat, store, cargs, "c", extra=extra, driver=[*DRIVER, "create:probe"])
            statements = re.findall(r"^statement (\d+): (.*)$", a.output, re.M)
            say(
                f"  [{cat.kind}] a new store's first writer connection runs {len(statements)} statements: "
                + ", ".join(f"{n}. {s.split('(')[0].split(' AS ')[0][:32]}" for n, s in statements)
            )
            first = int(next(n for n, s in statements if s.startswith("ATTACH")))
            points = [
                f"create:{first}",
                "create:marker",
                *(f"create:{int(n)}" for n, _ in statements if int(n) > first),
                f"create:mid:{rng.uniform(0.0, 0.03):.4f}",
                f"create:midcommit:{rng.uniform(0.0, 0.02):.4f}",
            ]
        for point in points:
            store, cargs = cat.new_store(f"create-{point.replace(':', '-')}")
            a = attempt(cat, store, cargs, "c", extra=extra, driver=[*DRIVER, point])
            view = a.view
            state = "no store" if not view.exists else ("unreadable" if view.error else f"run {view.status('c')}")
            say(
                f"  [{cat.kind}] create: died {died_at(a.output)}: {state}" + (f" ({view.error})" if view.error else "")
            )
            if view.error:
                cat.problem("corrupt", f"create {point}: after the kill, {view.error}")
            final = finish_episode(cat, store, cargs, "c", f"create {point}", extra=extra)
            key = re.sub(r":[\d.]+$", "", point)
            cat.sweeps[(key, f"{state}, then resume {'ok' if final['status'] == 'committed' else 'FAILED'}")] += 1
            out.append({"point": point, "died": died_at(a.output), "state": state, "error": view.error, **final})
    finally:
        cat.cache_root = was
    return out


# --- readers and trainers -------------------------------------------------------------------------------------------

LOOP_READER = """
import sys
from labelgen.store import LabelStore
n = 0
while True:
    con = LabelStore(sys.argv[1]).connect()
    for t in {tables}:
        con.execute(f"SELECT count(*) FROM {{t}}").fetchall()
    con.execute("SELECT category, count(*), avg(similarity) FROM labels GROUP BY ALL").fetchall()
    con.close()
    n += 1
    print("read", n, flush=True)
""".format(tables=TABLES)


def kill_reader(cat: Catalog, store: str, rng: random.Random, kind: str = "loop") -> dict:
    """Kill a reader mid-way: `python -m queries labels_per_category` at a random instant of
    its life, or a loop of connect() and queries after a random number of loops. The store
    opens after, unchanged."""
    before = inspect(store)
    if kind == "queries":
        proc, wait = Proc(["-m", "queries", "labels_per_category", f"store={store}"]), rng.uniform(0.3, 1.5)
        while not proc.exited() and time.monotonic() - proc.t0 < wait:
            time.sleep(0.005)
    else:
        proc, loops = Proc(["-c", LOOP_READER, store]), rng.randint(1, 4)
        while not proc.exited() and proc.seen(rf"^read {loops}$") is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.2))
    ended = proc.exited()
    killed = None if ended else proc.kill()
    text, rc = proc.output(), proc.popen.returncode
    proc.close()
    after = inspect(store)
    problems = judge(before, after, "", cat.ref.expect)
    if not after.error and after.totals != before.totals:
        problems.append(("partial", f"a killed reader changed the store: {before.totals} -> {after.totals}"))
    if ended and (kind == "loop" or rc != 0):
        problems.append(("corrupt", f"the reader ended by itself ({rc}): {' '.join(text[-600:].split())}"))
    out = {
        "kind": kind,
        "killed": killed is not None,
        "rc": rc,
        "problems": problems,
        "loops": len(re.findall(r"^read \d+$", text, re.M)),
    }
    cat.readers.append(out)
    for k, w in problems:
        cat.problem(k, f"reader {kind}: {w}")
    say(
        f"  [{cat.kind}] reader ({kind}) {'killed' if killed else f'ended ({rc}) before the kill'}; the store "
        + ("opens, unchanged" if not problems else "; ".join(w for _, w in problems))
    )
    return out


TRAIN_ARGS = [
    "data.val_split=none",
    "optim.steps=4",
    "optim.pairs_per_step=2",
    "optim.log_every=1",
    "checkpoint.every=2",
    "eval.keypoint_pairs=0",
]


def kill_trainer(cat: Catalog, store: str, rng: random.Random, at: str = "step", model_id: str | None = None) -> dict:
    """Kill `python -m trainer.train` mid-way (at "step": a random instant of its first
    steps; "start": once Ray Train marked the run's folder, which the driver's TensorBoard files
    are in before it), check the store, rerun the same
    command: it must succeed and register the model, once."""
    model_id = model_id or f"kill-{uuid.uuid4().hex[:6]}"
    argv = ["-m", "trainer.train", f"data.store={store}", f"model_id={model_id}", *TRAIN_ARGS]
    before = inspect(store)
    proc = Proc(argv)
    folder, t_kill = os.path.join(store, "checkpoints", model_id), None
    while not proc.exited():
        if t_kill is None:
            if at == "step" and (t := proc.seen(r"step 1/")) is not None:
                t_kill = t + rng.uniform(0.0, 3.0)
            elif at == "start" and os.path.exists(os.path.join(folder, ".validate_storage_marker")):
                t_kill = time.monotonic()
        if t_kill is not None and time.monotonic() >= t_kill:
            break
        time.sleep(0.01)
    ended = proc.exited()
    killed = None if ended else proc.kill()
    text = proc.output()
    proc.close()
    steps = len(re.findall(r"step \d+/", text))
    mid = inspect(store)
    problems = judge(before, mid, "", cat.ref.expect)
    if ended:
        problems.append(
            (
                "failed_resume",
                f"the trainer ended ({proc.popen.returncode}) before the kill: {' '.join(text[-600:].split())}",
            )
        )
    rerun = Proc(argv)
    rc = rerun.finish()
    again = rerun.output()
    rerun.close()
    after = inspect(store)
    if rc != 0:
        problems.append(("failed_resume", f"the trainer's rerun exited {rc}: {' '.join(again[-800:].split())}"))
    elif after.models.get(model_id) not in ("promoted", "rejected"):
        problems.append(("failed_resume", f"model {model_id} is {after.models.get(model_id)} after the rerun"))
    problems += [(k, w) for k, w in judge(mid, after, "", cat.ref.expect) if not (mid.error and k == "corrupt")]
    out = {
        "model_id": model_id,
        "killed": killed is not None,
        "processes": (killed or {}).get("processes"),
        "steps_before_kill": steps,
        "rc": rc,
        "status_after_kill": mid.models.get(model_id),
        "status": after.models.get(model_id),
        "problems": problems,
        "output": again,
    }
    cat.trainers.append(out)
    for k, w in problems:
        cat.problem(k, f"trainer {model_id}: {w}")
    say(
        f"  [{cat.kind}] trainer {model_id} killed after {steps} steps ({out['processes']} processes; model "
        f"{out['status_after_kill']}); its rerun exited {rc}, model {out['status']}"
        + ("" if not problems else ": " + "; ".join(w[:300] for _, w in problems))
    )
    return out


# --- the whole benchmark --------------------------------------------------------------------------------------------


def run_catalog(cat: Catalog, kills: int, rng: random.Random, sweeps: bool = True, fresh: int = 3) -> Catalog:
    """The reference, `fresh` episodes on new stores (aimed at the start, then features and
    commit), then episodes of random plans on the shared store until `kills` kills are made,
    readers killed between them; then the sweeps and a trainer."""
    cat.ref = reference(cat)
    n = 0
    for _ in range(fresh):
        n += 1
        episode(cat, f"e{n:03d}", ["start", "features", "commit"], rng, fresh=True)
    while sum(cat.landed.values()) < kills:
        n += 1
        episode(cat, f"e{n:03d}", plan(rng), rng)
        if n % 3 == 0:
            kill_reader(cat, cat.shared, rng, "queries" if n % 2 else "loop")
    kill_reader(cat, cat.shared, rng, "loop")
    if sweeps:
        commit_sweep(cat, rng)
        create_sweep(cat, rng)
    kill_trainer(cat, cat.shared, rng, "step")
    return cat


COLUMNS = [
    "catalog",
    "kills",
    *STAGES,
    "corrupt stores",
    "partly visible runs",
    "double registered",
    "failed resumes",
    "resumed runs whose labels differ",
    "episodes resumed and compared",
    "processes outside the tree",
    ".tmp files left",
    "runs with feature copies left",
]


def summary(cats: list[Catalog], wall: float) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in cats:
        p = {k: len(v) for k, v in c.problems.items()}
        lines.append(
            "| "
            + " | ".join(
                map(
                    str,
                    [
                        c.kind,
                        sum(c.landed.values()),
                        *(c.landed.get(s, 0) for s in STAGES),
                        p["corrupt"],
                        p["partial"],
                        p["double"],
                        p["failed_resume"],
                        p["differ"],
                        c.resumed,
                        c.escaped,
                        p["tmp"],
                        p["copies"],
                    ],
                )
            )
            + " |"
        )
    for c in cats:
        lines.append(
            f"\n{c.kind}: aimed -> landed: "
            + ", ".join(f"{a} -> {b}: {n}" for (a, b), n in sorted(c.aimed.items(), key=str))
        )
        if c.sweeps:
            lines.append(
                f"{c.kind} sweeps (point -> state after): "
                + "; ".join(f"{p} -> {s}: {n}" for (p, s), n in sorted(c.sweeps.items(), key=str))
            )
        lines.append(
            f"{c.kind} readers killed: {sum(r['killed'] for r in c.readers)} of {len(c.readers)}; trainers: "
            + (
                "; ".join(
                    f"{t['model_id']} killed after {t['steps_before_kill']} steps (model {t['status_after_kill']}), "
                    f"rerun exit {t['rc']} (model {t['status']})"
                    for t in c.trainers
                )
                or "none"
            )
            + f"; processes left by drivers that exited normally: {c.left_after_exit}"
        )
        for kind, items in c.problems.items():
            for item in items[:6]:
                lines.append(f"  {c.kind} {kind}: {item[:500]}")
            if len(items) > 6:
                lines.append(f"  {c.kind} {kind}: ... {len(items) - 6} more")
    lines.append(f"\nwall time {wall / 60:.1f} min")
    return "\n".join(lines)


def bench_kills(
    workdir: str, kills: int, catalogs: list[str], seed: int = 0, sweeps: bool = True, fresh: int = 3
) -> list[Catalog]:
    from .postgres import PostgresServer

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = os.path.abspath(workdir)
    os.makedirs(root, exist_ok=True)
    args = demo_args(build_tiny_demo(os.path.join(root, "demo")))
    out = []
    with ExitStack() as stack:
        for kind in catalogs:
            rng = random.Random(f"{seed}-{kind}")
            cat = Catalog(kind, os.path.join(root, kind), args)
            if kind == "postgres":
                cat.new_catalog = stack.enter_context(PostgresServer())
            say(f"{kind}: at least {kills} random kills" + (", then the sweeps" if sweeps else ""))
            out.append(run_catalog(cat, kills, rng, sweeps, fresh))
    return out


def kill_runs(conf) -> int:
    if conf.catalog not in CATALOGS:
        raise ValueError(f"catalog={conf.catalog}: catalog takes {', '.join(CATALOGS)}")
    shutil.rmtree(conf.workdir, ignore_errors=True)
    t0 = time.monotonic()
    cats = bench_kills(
        conf.workdir,
        conf.kills,
        ["sqlite", "postgres"] if conf.catalog == "both" else [conf.catalog],
        conf.seed,
        conf.sweeps,
        conf.fresh,
    )
    wall = time.monotonic() - t0
    print(summary(cats, wall), flush=True)
    if conf.json:
        with open(conf.json, "w") as f:
            json.dump(
                [
                    {
                        "kind": c.kind,
                        "landed": dict(c.landed),
                        "problems": c.problems,
                        "trials": c.trials,
                        "sweeps": {f"{p} -> {s}": n for (p, s), n in c.sweeps.items()},
                        "windows": c.ref.windows,
                        "readers": c.readers,
                        "trainers": [{k: v for k, v in t.items() if k != "output"} for t in c.trainers],
                    }
                    for c in cats
                ],
                f,
                indent=1,
                default=str,
            )
    broken = sum(len(c.problems[k]) for c in cats for k in ("corrupt", "partial", "double", "failed_resume", "differ"))
    return 1 if broken else 0


def main(argv=None) -> int:
    from labelgen.cli import run_command

    return run_command(default_conf, kill_runs, argv, announce=False)


if __name__ == "__main__":
    sys.exit(main())
