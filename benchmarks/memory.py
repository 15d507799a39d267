"""Peak memory of a whole label run (driver, Ray and every worker) as one category grows,
and the wall time of `make run` per stage.

A run is `python -m labelgen.run` in a child process on a private local Ray
instance; the process tree's proportional set size (PSS: shared pages, such as
Ray's object store, are split between the processes that map them instead of
counted in each) is sampled every 0.2 s and its peak kept. The summary's last
line gives the wall time of each stage.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import duckdb
import psutil

from labelgen.demo import build_demo
from labelgen.store import LabelStore


def tree_pss(root: psutil.Process) -> tuple[int, int, int]:
    """(PSS of the whole tree, of the root alone, of its largest other process), bytes."""
    total = own = largest = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            pss = p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += pss
        own, largest = (pss, largest) if p.pid == root.pid else (own, max(largest, pss))
    return total, own, largest


def peak_memory(argv: list[str], timeout_s: float = 1800, env: dict | None = None, cwd: str | None = None) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelgen.run", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RAY_ADDRESS": "", **(env or {})},
        cwd=cwd,  # `-m` puts the working folder first on the path: another checkout runs from its own
    )
    root, peak, driver, task, done = psutil.Process(proc.pid), [0], [0], [0], threading.Event()

    def sample():
        while not done.is_set():
            total, own, largest = tree_pss(root)
            peak[0], driver[0], task[0] = max(peak[0], total), max(driver[0], own), max(task[0], largest)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:  # end the run's whole tree, then say so
        for p in [*root.children(recursive=True), root]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait()
        raise
    finally:
        done.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"labelgen.run {' '.join(argv)} failed:\n{out[-3000:]}")
    return {
        "peak_mb": peak[0] / 2**20,
        "driver_peak_mb": driver[0] / 2**20,
        "task_peak_mb": task[0] / 2**20,  # the largest process beside the driver: a worker, or Ray's own
        "seconds": time.perf_counter() - t0,
        "stages": stages(out),
    }


def stages(summary: str) -> dict[str, float]:
    """{stage: seconds} from the run summary's `time` line (`ray start 3.1 s, ..., total 41.0 s`)."""
    line = next(line for line in summary.splitlines() if line.strip().startswith("time "))
    return {
        name: float(s)
        for name, s, _ in (part.rsplit(" ", 2) for part in line.strip()[len("time") :].strip().split(", "))
    }


VIEWS = 50  # of bench_memory's category


def bench_memory(root: str, tuples: int = 300) -> dict:
    """One category (a demo photo in 50 views) labelled with `tuples` and 10x as many tuples on
    a warm feature cache, the vote partitioned (labels.vote_tuples); and the 10x run with the
    vote in one task, as the reduce used to be: its memory, and whether the labels are the same."""
    demo = {"root": root, "photos": ["chelsea"], "azimuths": list(range(-60, 61, 5)), "elevations": [0, 10]}  # VIEWS
    manifest = build_demo(demo)
    base = [
        f"data.manifest={manifest}",
        f"features.cache={os.path.join(root, 'features-memory')}",
        "pairing.bin_deg=15",
        "labels.keep=null",
        "ray.num_cpus=2",
    ]
    peak_memory([*base, f"store={os.path.join(root, 'store-warm')}", "pairing.max_tuples=4"])  # features cached
    rows, labels = [], {}
    for name, n, extra in (
        ("1x", tuples, []),
        ("10x", 10 * tuples, []),
        ("10x, vote in one task", 10 * tuples, ["labels.vote_tuples=1000000"]),
    ):
        store = os.path.join(root, f"store-{len(rows)}")
        shutil.rmtree(store, ignore_errors=True)
        r = peak_memory([*base, f"store={store}", f"pairing.tuples_per_image={n // VIEWS}", *extra])
        con = LabelStore(store).connect()
        labels[name] = con.execute("SELECT * EXCLUDE run_id FROM labels").fetch_arrow_table()
        counts = json.loads(con.execute("SELECT counts FROM runs").fetchone()[0])
        con.close()
        rows.append(
            {
                "run": name,
                "tuples": counts["tuples"],
                "vote_tasks": len(glob.glob(f"{store}/runs/*/labels/*/*.parquet")),
                "labels": counts["labels"],
                "peak_mb": r["peak_mb"],
                "driver_peak_mb": r["driver_peak_mb"],
                "seconds": r["seconds"],
            }
        )
    return {
        "rows": rows,
        "growth": rows[1]["peak_mb"] / rows[0]["peak_mb"],
        "growth_one_task": rows[2]["peak_mb"] / rows[0]["peak_mb"],
        "same_labels": same_rows(labels["10x"], labels["10x, vote in one task"]),
    }


def same_rows(a, b) -> bool:
    con = duckdb.connect()
    con.register("a", a)
    con.register("b", b)
    return all(
        con.execute(f"SELECT count(*) FROM (FROM {x} EXCEPT ALL FROM {y})").fetchone()[0] == 0 for x, y in ("ab", "ba")
    )


def bench_make_run(root: str) -> dict:
    """`make run` (the built-in 3D collection, rendered anew into `root`) in a fresh store:
    its wall time per stage and its peak memory."""
    store = os.path.join(root, "store-make-run")
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(os.path.join(root, "objects"), ignore_errors=True)
    return peak_memory([f"data.objects.root={os.path.join(root, 'objects')}", f"store={store}"])


if __name__ == "__main__":
    from benchmarks import library_main

    sys.exit(library_main(__spec__.name, __doc__))
