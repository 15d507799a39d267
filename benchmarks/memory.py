"""Peak memory of a whole label run (driver, Ray and every worker) as the collection grows.

A run is `python -m labelgen.run` in a child process on a private local Ray
instance; the process tree's proportional set size (PSS: shared pages, such as
Ray's object store, are split between the processes that map them instead of
counted in each) is sampled every 0.2 s and its peak kept.
"""

import os
import shutil
import subprocess
import sys
import threading
import time

import pandas as pd
import psutil

from labelgen.demo import build_demo


def tree_pss(root: psutil.Process) -> tuple[int, int]:
    """(PSS of the whole tree, PSS of the root alone), bytes."""
    total = own = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            pss = p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += pss
        own = pss if p.pid == root.pid else own
    return total, own


def peak_memory(argv: list[str], timeout_s: float = 1800) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "labelgen.run", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "RAY_ADDRESS": ""})
    root, peak, driver, done = psutil.Process(proc.pid), [0], [0], threading.Event()

    def sample():
        while not done.is_set():
            total, own = tree_pss(root)
            peak[0], driver[0] = max(peak[0], total), max(driver[0], own)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    out, _ = proc.communicate(timeout=timeout_s)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"labelgen.run {' '.join(argv)} failed:\n{out[-3000:]}")
    return {"peak_mb": peak[0] / 2**20, "driver_peak_mb": driver[0] / 2**20, "seconds": time.perf_counter() - t0}


def bench_memory(root: str, instances: tuple[int, int] = (1, 10)) -> list[dict]:
    """The same run on the demo rendered as 1 and as 10 instances per photo (10x the images
    and categories, same images per category)."""
    rows = []
    for n in instances:
        demo = {"root": root, "instances": n, "azimuths": [-30, -15, 0, 15, 30], "elevations": [0]}
        manifest = build_demo(demo)
        store = os.path.join(root, f"store-x{n}")
        shutil.rmtree(store, ignore_errors=True)  # a cold run: features are computed, not read from a cache
        r = peak_memory([f"data.manifest={manifest}", f"store={store}", "pairing.bin_deg=15", "ray.num_cpus=2"])
        images = pd.read_parquet(manifest, columns=["category"])
        rows.append({"images": len(images), "categories": images["category"].nunique(), **r})
    return rows
