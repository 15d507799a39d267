"""`python -m tests.faults.catalog_stress`, from the repository's root: many short concurrent
commits into label stores on a PostgreSQL catalog, with catalog conflicts provoked on purpose,
each store checked whole after (tests/test_catalog_stress.py runs a few rounds).

A trial (a round) is one fresh store: a new PostgreSQL database as its catalog and a new
data folder, its tables created by one first write, then `writers` processes that each
commit `runs` label runs as the pipeline does (begin_run, update_run, the run's Parquet
files written, LabelStore.commit), all released at the same instant, optionally with
`trainers` processes that log models meanwhile (model_log, another table). A locker holds
an EXCLUSIVE lock on ducklake_snapshot for hold_ms of every hold_ms + gap_ms (every
commit queues behind it, so the queued ones meet at its release and all but one fail), and
the server runs with log_line_prefix '%d ' so that every catalog error it raised is
counted per round. After the writers, the store is opened read-only and every table and
view is read in full, every committed run's rows checked against what its writer wrote,
no row of a run that did not commit, and the catalog's data files checked for name-map
ids that are not their table's (`DAMAGED_FILES`).

Variants (variant=):
  ducklake  DuckLake's own commit retry on (`ducklake_max_retry_count` 10, its default),
            the store's whole-transaction retry around it: the store before its fix
  store     the store's settings exactly (`ducklake_max_retry_count` 0, `catalog.retrying`)
  both      ducklake and store, round by round

What fails: DuckLake 1.4 (extension 3f1b372) rewrites a commit's data files in place to the
name-map ids of its first try; a retry writes the maps under new ids and leaves the files
naming the old ones, which another commit has taken meanwhile (an inlined insert takes a
file id and writes no map: `Unknown name map id N`). Only a commit that makes new name maps
(the first files of a table, or of a new file schema) is exposed, so a trial is a fresh
store. `reduced=true` runs the smallest script that shows it (plain duckdb, two connections).

    python -m tests.faults.catalog_stress trials=200 writers=4 variant=both

What it measured is in the README (Reliability: many writers, one catalog).
"""

import json
import logging
import multiprocessing as mp
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

from labelgen.cli import run_command
from labelgen.config import Location
from tests.support.tiny import begin_run, label_table

from .postgres import PostgresServer, bindir

VARIANTS = {"ducklake": ["ducklake"], "store": ["store"], "both": ["ducklake", "store"]}


@dataclass
class StressConf:
    trials: int = 20  # rounds (fresh stores) per variant
    variant: str = "both"  # how commits are retried (above): ducklake | store | both
    writers: int = 4  # label writer processes per round
    trainers: int = 0  # processes that log models (model_log) meanwhile
    runs: int = 2  # label runs each writer commits per round
    spread_ms: int = 1000  # each writer starts at a random moment in this span (one's run starts meet another's commit)
    jitter_ms: int = 200  # a random pause of up to this before each store operation
    seed: int = 0  # of the random start offsets and pauses
    hold_ms: int = 150  # the locker's hold of ducklake_snapshot (0: no locker)
    gap_ms: int = 150  # the locker's pause between holds
    repair: bool = True  # try REPAIR on each damaged catalog, then read the store again
    keep_corrupt: bool = False  # keep corrupt stores' databases and folders
    workdir: Location | None = None  # the stores' data folders; default: a temp folder, removed after
    round_timeout: float = 300.0  # seconds a round's writers may take
    max_minutes: float = 0.0  # stop after this many minutes (0: run every trial)
    json: str | None = None  # write the rounds and the summary to this file
    reduced: bool = False  # run only the reduced script (plain duckdb), both ways


default_conf = StressConf
STORE_RETRY = "SET ducklake_max_retry_count = 0"  # the line of catalog.statements that variant ducklake changes
DUCKLAKE_RETRY = "SET ducklake_max_retry_count = 10"  # DuckLake's default
PG_ERRORS = {
    "serialization": "could not serialize access",
    "unique": "duplicate key value violates unique constraint",
    "deadlock": "deadlock detected",
}
CATEGORIES = ("cat", "dog")
LOCKER_APP = "catalog-stress-locker"

# The smallest script: plain duckdb 1.4.4 and the extensions of the duckdb-ext-* wheels, two
# connections. argv: a libpq string of an empty database, DuckLake's max retry count.
REDUCED = r"""
import importlib.util, os, sys, tempfile
import duckdb

dsn, retries = sys.argv[1], int(sys.argv[2])
ext = os.path.join(list(importlib.util.find_spec("duckdb_ext").submodule_search_locations)[0], "extensions")
data = tempfile.mkdtemp()

def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": True})
    platform = con.execute("PRAGMA platform").fetchone()[0]
    for name in ("ducklake", "postgres_scanner"):
        con.execute(f"LOAD '{ext}/v{duckdb.__version__}/{platform}/{name}.duckdb_extension'")
    con.execute(f"SET ducklake_max_retry_count = {retries}")
    con.execute(f"ATTACH 'ducklake:postgres:{dsn}' AS lake (DATA_PATH '{data}/')")
    return con

con = connect()
loaded = "SELECT extension_name, extension_version FROM duckdb_extensions() WHERE loaded"
versions = dict(con.execute(loaded).fetchall())
print(f"versions: duckdb {duckdb.__version__} ducklake {versions['ducklake']}",
      f"postgres_scanner {versions['postgres_scanner']}")
con.execute("CREATE TABLE lake.t (a INTEGER)")
con.execute("CREATE TABLE lake.u (a INTEGER)")
con.execute(f"COPY (SELECT 1 AS a) TO '{data}/f.parquet'")  # no field ids: registering it makes a name map
a, b = connect(), connect()
b.execute("BEGIN")
b.execute(f"CALL ducklake_add_data_files('lake', 't', '{data}/f.parquet')")  # a new name map, transaction-local id
a.execute("INSERT INTO lake.u VALUES (1)")  # another commit lands first and takes the next file id
try:
    b.execute("COMMIT")  # the same snapshot id: unique violation, DuckLake retries (unless retries is 0)
    print("commit: landed")
except duckdb.Error as e:
    print("commit: failed:", str(e).strip().splitlines()[-2][-160:])
try:
    print("read: ok", connect().execute("SELECT count(*) FROM lake.t").fetchall())
except duckdb.Error as e:
    print("read: failed:", e)
"""


# ---------------------------------------------------------------- the PostgreSQL server


def libpq(catalog: str) -> dict:
    """host, port, user, dbname of a `postgres:<libpq string>` catalog."""
    return dict(kv.split("=", 1) for kv in catalog.split(":", 1)[1].split())


def psql(catalog: str, sql: str, *, check=True, env=None, **popen) -> subprocess.CompletedProcess:
    c = libpq(catalog)
    args = [
        psql_binary(),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        c["host"],
        "-p",
        c["port"],
        "-U",
        c["user"],
        "-d",
        c["dbname"],
        "-At",
        "-c",
        sql,
    ]
    return subprocess.run(args, check=check, capture_output=True, text=True, env=env, **popen)


def psql_binary() -> str:
    where = bindir()
    path = os.path.join(where, "psql") if where else ""
    return path if os.path.exists(path) else (shutil.which("psql") or "psql")


def drop_database(catalog: str):
    c = libpq(catalog)
    psql(
        f"postgres:host={c['host']} port={c['port']} user={c['user']} dbname=postgres",
        f'DROP DATABASE IF EXISTS "{c["dbname"]}" WITH (FORCE)',
        check=False,
    )


# ---------------------------------------------------------------- what a writer commits


def expected_run(run_id: str, i: int) -> dict:
    """The rows of run i of a writer, per category: labels (src_x 0..n-1), 1 image pair, 2 images."""
    return {c: 3 + (i + len(run_id) + k) % 5 for k, c in enumerate(CATEGORIES)}


def run_tables(run_id: str, sizes: dict):
    import pandas as pd

    from labelgen.store import images_table

    for category, n in sizes.items():
        a, b = f"{run_id}-{category}-a", f"{run_id}-{category}-b"  # the run's own pairs: every label stays current
        images = images_table(
            pd.DataFrame(
                {
                    "run_id": run_id,
                    "image_id": [a, b],
                    "category": category,
                    "uri": [f"{a}.png", f"{b}.png"],
                    "azimuth": [0.0, 30.0],
                    "n_fg": [10, 12],
                }
            )
        )
        yield category, label_table(run_id, category, {(a, b): n}, confidence=0.5), images


def set_variant(variant: str):
    """This process's store as the variant has it (its own module attributes: the store's files stay as they are)."""
    from labelgen.store import catalog as cat

    if not hasattr(cat, "_stress_original"):
        cat._stress_original = cat.statements
    statements = cat._stress_original
    if STORE_RETRY not in statements("/nonexistent", "postgres:dbname=x"):
        raise RuntimeError(f"catalog.statements no longer has {STORE_RETRY!r}: update tests/faults/catalog_stress.py")

    def with_ducklake_retry(*args, **kwargs):
        return [DUCKLAKE_RETRY if s == STORE_RETRY else s for s in statements(*args, **kwargs)]

    cat.statements = with_ducklake_retry if variant == "ducklake" else statements


class Retries(logging.Handler):
    """Counts the store's whole-transaction retries (catalog.retrying logs each one)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.count = 0
        self.reasons = Counter()

    def emit(self, record):
        if "trying again" in record.getMessage():
            self.count += 1
            self.reasons[error_kind(record.getMessage())] += 1


def error_kind(message: str) -> str:
    for kind, text in (
        ("unknown name map", "Unknown name map id"),
        *((k, v) for k, v in PG_ERRORS.items()),
        ("locked", "database is locked"),
        ("conflict", "onflict"),
    ):
        if text in message:
            return kind
    return "other"


def writer(task: dict) -> dict:
    """One writer's runs (or a trainer's model rows) into the round's store."""
    from labelgen.store import LabelStore
    from labelgen.store.lake import now

    set_variant(task["variant"])
    handler = Retries()
    logger = logging.getLogger("labelgen.store.catalog")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    store = LabelStore(task["uri"], task["catalog"])
    out = {"name": task["name"], "committed": [], "errors": [], "ops": 0}
    rng = random.Random(task["seed"])

    def pause():
        time.sleep(rng.uniform(0, task["jitter_ms"]) / 1000)

    time.sleep(max(0.0, task["start_at"] - time.time()))
    try:
        for i in range(task["runs"]):
            run_id = f"{task['name']}-{i}"
            step = "begin_run"
            try:
                if task["kind"] == "trainer":
                    step = "save_model"
                    pause()
                    store.save_model({"model_id": run_id, "label_runs": [], "created": now(), "config": "k: 1"})
                    out["ops"] += 1
                    continue
                pause()
                begin_run(store, run_id)
                step = "update_run"
                pause()
                store.update_run(run_id, sphere_id=f"sphere-{task['name']}")  # as a run with a sphere does
                sizes = expected_run(run_id, i)
                for category, labels, images in run_tables(run_id, sizes):
                    store.files(run_id).write_category(category, labels, images, {"labels": len(labels)})
                step = "commit"
                pause()
                store.commit(
                    run_id,
                    {"labels": sum(sizes.values())},
                    [{"image_id": f"{run_id}-bad", "uri": "bad.png", "stage": "decode", "error": "broken"}],
                )
                out["committed"].append(run_id)
                out["ops"] += 3
            except Exception as e:  # noqa: BLE001 (every failure is a figure)
                out["errors"].append(
                    {
                        "run": run_id,
                        "step": step,
                        "kind": error_kind(str(e)),
                        "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}",
                    }
                )
    finally:
        logger.removeHandler(handler)
    out["store_retries"] = handler.count
    out["retry_reasons"] = dict(handler.reasons)
    return out


def worker_main(tasks, results):
    """A long-lived writer process (imports once): tasks in, results out, None stops it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    while True:
        task = tasks.get()
        if task is None:
            return
        try:
            results.put(writer(task))
        except Exception as e:  # noqa: BLE001
            results.put(
                {
                    "name": task["name"],
                    "committed": [],
                    "ops": 0,
                    "store_retries": 0,
                    "retry_reasons": {},
                    "errors": [{"run": None, "step": "writer", "kind": "other", "error": f"{type(e).__name__}: {e}"}],
                }
            )


class Pool:
    """Writer processes (spawned: a fresh DuckDB each), restarted if one dies (a crash is a figure too)."""

    def __init__(self, size: int):
        self.ctx = mp.get_context("spawn")
        self.size = size
        self.procs = []
        self._start()

    def _start(self):
        self.tasks, self.results = self.ctx.Queue(), self.ctx.Queue()
        self.procs = [
            self.ctx.Process(target=worker_main, args=(self.tasks, self.results), daemon=True) for _ in range(self.size)
        ]
        for p in self.procs:
            p.start()

    def run(self, tasks: list[dict], timeout: float) -> tuple[list[dict], list[str]]:
        for t in tasks:
            self.tasks.put(t)
        out, crashed, deadline = [], [], time.time() + timeout
        while len(out) < len(tasks):
            try:
                out.append(self.results.get(timeout=1.0))
                continue
            except queue.Empty:
                pass
            dead = [p for p in self.procs if p.exitcode is not None]
            if dead or time.time() > deadline:
                crashed = [f"writer process exit {p.exitcode}" for p in dead] or ["timeout"]
                self.close(force=True)
                self._start()
                break
        return out, crashed

    def close(self, force=False):
        for p in self.procs:
            if not force and p.is_alive():
                self.tasks.put(None)
        for p in self.procs:
            if force:
                p.kill()
            p.join(timeout=30)


# ---------------------------------------------------------------- a round


def start_locker(catalog: str, hold_ms: int, gap_ms: int) -> subprocess.Popen | None:
    """A session that holds an EXCLUSIVE lock on ducklake_snapshot (reads go on, commits queue)
    for hold_ms of every hold_ms + gap_ms, until stop_locker."""
    if hold_ms <= 0:
        return None
    sql = (
        f"DO $$ BEGIN LOOP LOCK TABLE ducklake_snapshot IN EXCLUSIVE MODE; PERFORM pg_sleep({hold_ms / 1000}); "
        f"COMMIT; PERFORM pg_sleep({gap_ms / 1000}); END LOOP; END $$"
    )
    c = libpq(catalog)
    return subprocess.Popen(
        [psql_binary(), "-X", "-q", "-h", c["host"], "-p", c["port"], "-U", c["user"], "-d", c["dbname"], "-c", sql],
        env={**os.environ, "PGAPPNAME": LOCKER_APP},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_locker(catalog: str, locker):
    if locker is None:
        return
    psql(
        catalog,
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{LOCKER_APP}' "
        "AND datname = current_database()",
        check=False,
    )
    try:
        locker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        locker.kill()
        locker.wait()


def check_store(uri: str, catalog: str, committed_by_writers: set[str], attempted: dict[str, int]) -> dict:
    """Open the store read-only and read all of it; what is wrong, if anything."""
    import duckdb

    from labelgen.store import LabelStore
    from labelgen.store import catalog as cat
    from labelgen.store.check import damaged_files
    from labelgen.store.schema import DATA_TABLES, LOG_TABLES, VIEWS

    problems, out = [], {"damaged_files": None}
    try:
        raw = cat.attach(uri, catalog, read_only=True)
        out["damaged_files"] = damaged_files(raw)
        raw.close()
        con = LabelStore(uri, catalog).connect()  # refuses a damaged store, naming the repair
    except Exception as e:  # noqa: BLE001
        return {"problems": [f"open: {e}"], "damaged_files": out["damaged_files"], "committed": set()}
    try:

        def q(sql):
            try:
                return con.execute(sql).fetchall()
            except duckdb.Error as e:
                problems.append(f"{sql.split(' FROM ')[-1][:40]}: {str(e).strip().splitlines()[0][:200]}")
                return None

        for name in [*DATA_TABLES, *LOG_TABLES, *VIEWS]:
            q(f"SELECT count(*), count(COLUMNS(*)) FROM {name}")  # every column of every row
        for name in DATA_TABLES:
            q(f"SELECT count(*) FROM ducklake_list_files('lake', '{name}')")
        committed = {r for (r,) in q("SELECT run_id FROM runs WHERE status = 'committed'") or []}
        out["committed"] = committed
        got = {
            "label_history": q(
                "SELECT run_id, category, count(*), sum(src_x), count(src_image_id), count(confidence) "
                "FROM label_history GROUP BY ALL"
            ),
            "label_pairs": q(
                "SELECT run_id, category, count(*), sum(labels), count(tgt_image_id) FROM label_pairs GROUP BY ALL"
            ),
            "images": q("SELECT run_id, category, count(*), count(image_id), sum(n_fg) FROM images GROUP BY ALL"),
            "run_stats": q("SELECT run_id, category, count(*), sum(labels) FROM run_stats GROUP BY ALL"),
            "labels": q("SELECT run_id, category, count(*), sum(src_x) FROM labels GROUP BY ALL"),
        }
        want = {"label_history": set(), "label_pairs": set(), "images": set(), "run_stats": set(), "labels": set()}
        for run_id in committed:
            i = attempted.get(run_id)
            if i is None:
                problems.append(f"run {run_id} committed but no writer attempted it")
                continue
            for category, n in expected_run(run_id, i).items():
                want["label_history"].add((run_id, category, n, n * (n - 1) / 2, n, n))
                want["label_pairs"].add((run_id, category, 1, n, 1))
                want["images"].add((run_id, category, 2, 2, 22))
                want["run_stats"].add((run_id, category, 1, n))
                want["labels"].add((run_id, category, n, n * (n - 1) / 2))
        for name, rows in got.items():
            if rows is None:
                continue
            rows = {tuple(float(v) if isinstance(v, float) else v for v in r) for r in rows}
            if rows != want[name]:
                problems.append(
                    f"{name}: rows differ from what the committed runs wrote: missing "
                    f"{sorted(want[name] - rows)[:3]}, unexpected {sorted(rows - want[name])[:3]}"
                )
        bad = q("SELECT run_id, count(*) FROM bad_inputs GROUP BY ALL")
        if bad is not None and {r: n for r, n in bad} != {r: 1 for r in committed}:
            problems.append(f"bad_inputs: {sorted(bad)[:4]} for committed {sorted(committed)[:4]}")
        if committed_by_writers - committed:
            problems.append(f"runs whose commit returned are not committed: {sorted(committed_by_writers - committed)}")
    finally:
        con.close()
    return {"problems": problems, **out}


def pg_errors(log: str, offset: int) -> tuple[dict, int]:
    """Catalog errors the server logged since offset, per database: {db: Counter(kind)}."""
    per_db = {}
    with open(log, errors="replace") as f:
        f.seek(offset)
        text = f.read()
        offset = f.tell()
    for m in re.finditer(r"^(\S*) ERROR:  (.*)$", text, re.M):
        db, message = m.groups()
        kind = next((k for k, v in PG_ERRORS.items() if v in message), "other")
        per_db.setdefault(db, Counter())[kind] += 1
    return per_db, offset


def repair(catalog: str, uri: str) -> dict:
    """The store's repair (python -m labelgen.store repair) on a damaged catalog."""
    from labelgen.store import LabelStore
    from labelgen.store.check import repair as mend_store

    done = mend_store(LabelStore(uri, catalog))
    return {"damaged_before": done["repaired"] + len(done["left"]), "damaged_after": len(done["left"])}


def one_round(
    n: int, variant: str, a, pool: Pool, pg_catalog, pg_log: str | None, log_offset: int, workdir: str
) -> tuple[dict, int]:
    """Trial n of a variant in a fresh store; its figures, and the server log's offset after it."""
    db = f"stress_{variant}_{n:05d}"
    catalog = pg_catalog(db)
    uri = os.path.join(workdir, db)
    from labelgen.store import LabelStore

    set_variant(variant)  # the seed write too
    LabelStore(uri, catalog).update_run("seed", status="seed")  # creates the tables, as a store's first write does
    locker = start_locker(catalog, a.hold_ms, a.gap_ms)
    start_at = time.time() + 0.3
    tasks = [{"name": f"w{k}", "kind": "labels", "runs": a.runs} for k in range(a.writers)]
    tasks += [{"name": f"m{k}", "kind": "trainer", "runs": 2 * a.runs} for k in range(a.trainers)]
    rng = random.Random(
        f"{a.seed}-{variant}-{n}"
    )  # start offsets and pauses: every interleaving, on any machine's speed
    tasks = [
        {
            **t,
            "uri": uri,
            "catalog": catalog,
            "variant": variant,
            "start_at": start_at + rng.uniform(0, a.spread_ms) / 1000,
            "jitter_ms": a.jitter_ms,
            "seed": rng.random(),
        }
        for t in tasks
    ]
    t0 = time.time()
    try:
        results, crashed = pool.run(tasks, timeout=a.round_timeout)
    finally:
        stop_locker(catalog, locker)
    seconds = time.time() - t0
    attempted = {f"{t['name']}-{i}": i for t in tasks if t["kind"] == "labels" for i in range(t["runs"])}
    returned = {r for res in results for r in res["committed"]}
    check = check_store(uri, catalog, returned, attempted)
    errors = [e for res in results for e in res["errors"]]
    pg, log_offset = pg_errors(pg_log, log_offset) if pg_log else ({}, log_offset)
    pg = pg.get(db, Counter())
    damaged = check["damaged_files"]
    corrupt = bool(check["problems"]) or bool(damaged)
    out = {
        "round": n,
        "variant": variant,
        "db": db,
        "seconds": seconds,
        "crashed": crashed,
        "label_commits": len(check.get("committed", ())),
        "model_rows": sum(res["ops"] for res in results if res["name"].startswith("m")),
        "store_retries": sum(res["store_retries"] for res in results),
        "retry_reasons": sum((Counter(res["retry_reasons"]) for res in results), Counter()),
        "errors": errors,
        "pg_errors": dict(pg),
        "problems": check["problems"],
        "damaged_files": len(damaged or []),
        "corrupt": corrupt,
        "unknown_name_map": any("Unknown name map id" in p for p in check["problems"]),
    }
    if corrupt and a.repair and damaged:
        out["repair"] = repair(catalog, uri)
        after = check_store(uri, catalog, returned, attempted)
        out["repair"]["problems_after"] = after["problems"]
        out["repair"]["ok"] = not after["problems"] and not after["damaged_files"]
    keep = corrupt and a.keep_corrupt
    if not keep:
        drop_database(catalog)
        shutil.rmtree(uri, ignore_errors=True)
    out["kept"] = (catalog, uri) if keep else None
    return out, log_offset


def summarize(rounds: list[dict]) -> dict:
    out = {}
    for r in rounds:
        s = out.setdefault(
            r["variant"],
            {
                "rounds": 0,
                "label_commits": 0,
                "model_rows": 0,
                "pg_serialization": 0,
                "pg_unique": 0,
                "pg_deadlock": 0,
                "pg_other": 0,
                "store_retries": 0,
                "failed_ops": 0,
                "failed_by_kind": Counter(),
                "crashes": 0,
                "corrupt_stores": 0,
                "unknown_name_map": 0,
                "first_corrupt_round": None,
                "repaired": 0,
                "seconds": 0.0,
                "samples": [],
            },
        )
        s["rounds"] += 1
        s["seconds"] += r["seconds"]
        s["label_commits"] += r["label_commits"]
        s["model_rows"] += r["model_rows"]
        for k in ("serialization", "unique", "deadlock", "other"):
            s[f"pg_{k}"] += r["pg_errors"].get(k, 0)
        s["store_retries"] += r["store_retries"]
        s["failed_ops"] += len(r["errors"])
        s["failed_by_kind"].update(e["kind"] for e in r["errors"])
        s["crashes"] += len(r["crashed"])
        if r["corrupt"]:
            s["corrupt_stores"] += 1
            s["unknown_name_map"] += r["unknown_name_map"]
            s["first_corrupt_round"] = s["first_corrupt_round"] or s["rounds"]
            s["repaired"] += bool(r.get("repair", {}).get("ok"))
            if len(s["samples"]) < 3:
                s["samples"].append(r["problems"][:2])
    for s in out.values():
        s["failed_by_kind"] = dict(s["failed_by_kind"])
        s["pg_conflicts"] = s["pg_serialization"] + s["pg_unique"] + s["pg_deadlock"]
    return out


def render(summary: dict) -> str:
    keys = [
        "rounds",
        "label_commits",
        "pg_conflicts",
        "pg_serialization",
        "pg_unique",
        "store_retries",
        "failed_ops",
        "crashes",
        "corrupt_stores",
        "unknown_name_map",
        "first_corrupt_round",
        "repaired",
    ]
    lines = ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for v, s in summary.items():
        lines.append(f"| {v} | " + " | ".join(str(s[k]) for k in keys) + " |")
    for v, s in summary.items():
        if s["failed_by_kind"]:
            lines.append(f"{v}: failed operations by error: {s['failed_by_kind']}")
        for sample in s["samples"]:
            lines.append(f"{v}: corrupt store: {'; '.join(sample)}")
    return "\n".join(lines)


def stress(a, pg_catalog, pg_log: str | None = None, progress=print) -> dict:
    """The rounds (`a`: the parsed options); pg_catalog(name) makes a database and returns its
    catalog string; pg_log: the server's log, to count its errors (None: not counted)."""
    workdir = a.workdir or tempfile.mkdtemp(prefix="catalog-stress-")
    os.makedirs(workdir, exist_ok=True)
    pool = Pool(a.writers + a.trainers)
    rounds, offset, t0 = [], 0, time.time()
    order = VARIANTS[a.variant]
    try:
        for n in range(a.trials):
            for variant in order:
                r, offset = one_round(n, variant, a, pool, pg_catalog, pg_log, offset, workdir)
                rounds.append(r)
                done = sum(x["variant"] == variant for x in rounds)
                status = (
                    "CORRUPT: " + "; ".join(r["problems"][:1] or [f"{r['damaged_files']} damaged files"])
                    if r["corrupt"]
                    else "ok"
                )
                if r.get("repair"):
                    status += f"; repair: {'ok' if r['repair']['ok'] else r['repair']}"
                pge = r["pg_errors"]
                progress(
                    f"[{variant} {done}/{a.trials}] {r['seconds']:.1f} s, {r['label_commits']} runs committed, "
                    f"catalog errors: {pge.get('serialization', 0)} serialization, {pge.get('unique', 0)} unique"
                    f"{', ' + str(pge.get('other')) + ' other' if pge.get('other') else ''}; store retries "
                    f"{r['store_retries']}; failed {len(r['errors'])}"
                    f"{' (' + ', '.join(sorted({e['kind'] for e in r['errors']})) + ')' if r['errors'] else ''}"
                    f"{'; crashed: ' + ', '.join(r['crashed']) if r['crashed'] else ''}; store {status}"
                )
            if a.max_minutes and time.time() - t0 > 60 * a.max_minutes:
                progress(f"stopping: max_minutes={a.max_minutes} reached after {n + 1} trials")
                break
    finally:
        pool.close()
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return {"rounds": rounds, "summary": summarize(rounds)}


def reduced(server: PostgresServer) -> dict:
    """REDUCED with DuckLake's retry (10) and without (0), each on a fresh database."""
    out = {}
    for retries in (10, 0):
        catalog = server(f"reduced_{retries}_{os.getpid()}")
        p = subprocess.run(
            [sys.executable, "-c", REDUCED, catalog.split(":", 1)[1], str(retries)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        out[retries] = p.stdout + p.stderr[-2000:]
        drop_database(catalog)
    return out


def run_stress(a) -> int:
    if a.variant not in VARIANTS:
        raise ValueError(f"variant={a.variant}: variant takes {', '.join(VARIANTS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server and the writers on the way out
    server = PostgresServer({"log_line_prefix": "'%d '", "log_min_error_statement": "panic", "max_connections": 300})
    try:
        if a.reduced:
            for retries, text in reduced(server).items():
                print(f"--- ducklake_max_retry_count = {retries}\n{text.strip()}")
            return 0
        print(
            f"PostgreSQL {server.bindir.split('/')[-2]} on port {server.port}; {a.trials} trials of {a.variant}, "
            f"{a.writers} writers x {a.runs} runs, {a.trainers} trainers, spread {a.spread_ms} ms, jitter "
            f"{a.jitter_ms} ms, locker {a.hold_ms}/{a.gap_ms} ms",
            flush=True,
        )
        result = stress(a, server, server.log, progress=lambda s: print(s, flush=True))
    finally:
        server.close()
    print(render(result["summary"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1, default=lambda o: sorted(o) if isinstance(o, set) else str(o))
    return 1 if result["summary"].get("store", {}).get("corrupt_stores") else 0


def main(argv=None) -> int:
    return run_command(default_conf, run_stress, argv, announce=False)


if __name__ == "__main__":
    sys.exit(main())
