"""Pairing at scale: seconds, peak memory, tuples and coverage of one category's
`labelgen.pairing.category_tuples` as the category grows.

Each size runs in a fresh subprocess, so its peak is its own: ru_maxrss after pairing
minus ru_maxrss after the imports and the rows are made (the baseline). Poses: `full`
(azimuth 0-360, elevation -10..40, theta -10..10, as the 3D collections have), `so3`
(uniformly random rotations), `similarity` (no pose: random unit 768-d descriptors,
neighbour walks). Coverage: the share of images that anchor at least one tuple.

`python -m benchmarks.pairing [quick=true]` prints the table.
"""

import json
import subprocess
import sys
from dataclasses import dataclass

from labelgen.cli import run_command

from .report import table

SIZES = (1000, 4000, 16000, 50000)
QUICK_SIZES = (1000, 4000)
KINDS = ("full", "so3", "similarity")


@dataclass
class PairingBenchConf:
    quick: bool = False  # sizes 1000 and 4000 only (QUICK_SIZES), instead of up to 50000


default_conf = PairingBenchConf

CHILD = """
import json, resource, sys, time
import numpy as np, pandas as pd
from omegaconf import OmegaConf
from scipy.spatial.transform import Rotation
from labelgen.pairing import category_tuples, default_conf

n, kind, overrides = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
rng = np.random.default_rng(0)
descriptors = None
if kind == "full":
    rows = pd.DataFrame(
        {"azimuth": rng.uniform(0, 360, n), "elevation": rng.uniform(-10, 40, n), "theta": rng.uniform(-10, 10, n)}
    )
elif kind == "so3":
    zxy = Rotation.random(n, random_state=0).as_euler("ZXY", degrees=True)  # rotation() is Rz Rx Ry
    rows = pd.DataFrame({"azimuth": zxy[:, 2], "elevation": zxy[:, 1], "theta": zxy[:, 0]})
else:
    rows = pd.DataFrame({"azimuth": np.full(n, np.nan)})
    desc = rng.normal(size=(n, 768)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    descriptors = lambda r: desc  # noqa: E731
conf = OmegaConf.merge(default_conf, overrides)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
tuples = category_tuples(rows, conf, descriptors)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"images": n, "poses": kind, "seconds": seconds, "peak_mb": peak / 1024, "tuples": len(tuples),
                  "coverage": len(np.unique(tuples[:, 0])) / n if len(tuples) else 0.0}))
"""


def pair_once(n: int, kind: str = "full", **overrides) -> dict:
    """category_tuples on `n` random poses of `kind` in a fresh interpreter: its own peak."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), kind, json.dumps(overrides)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def pairing_scale(sizes=SIZES, kinds=("full", "so3"), **overrides) -> list[dict]:
    """One row per size and pose kind: seconds, peak MB above the baseline, tuples, coverage."""
    return [pair_once(n, kind, **overrides) for kind in kinds for n in sizes]


def bench_pairing(quick: bool) -> list[dict]:
    """Full and uniform poses at every size, the pose-free path at the smaller ones (its exact
    neighbour search costs N^2 x the descriptor size in time, not in memory)."""
    sizes = QUICK_SIZES if quick else SIZES
    return pairing_scale(sizes) + pairing_scale(sizes[:3], kinds=("similarity",))


def render_pairing(rows: list[dict]) -> str:
    return "\n".join(
        [
            "## Pairing one category",
            "",
            "`pairing.category_tuples` alone, each size in a fresh interpreter (peak: above its baseline after the "
            "imports), at the defaults (K=4, 45 deg hops, 30 tuples per image); coverage: the share of images that "
            "anchor a tuple.",
            "",
            table(rows, {"seconds": ".1f", "peak_mb": ".0f", "coverage": ".4f"}),
            "",
        ]
    )


def main(argv=None) -> int:
    return run_command(
        default_conf, lambda conf: print(render_pairing(bench_pairing(conf.quick))) or 0, argv, announce=False
    )


if __name__ == "__main__":
    sys.exit(main())
