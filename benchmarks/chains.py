"""Label generation: the published per-tuple loop against the service's chain stage,
on the same cached features and the same tuples, one core each; and what bounds the
service: the similarity matmuls of the distinct image pairs, timed alone."""

import sys
import time

import torch
from omegaconf import OmegaConf

from labelgen.chain import nearest
from labelgen.features import FeatureCache
from labelgen.labels import Foreground
from labelgen.tuples import make_tuples

from .reference import reference_candidates

LIKE_REFERENCE = {"pair_radius": None, "max_gap_deg": None}  # the published generator has no co-visibility check
KEY = ("src_image_id", "tgt_image_id", "hops", "src_x", "src_y", "tgt_x", "tgt_y")


def service_candidates(tuples_by_cat, features: FeatureCache, conf, device="cpu") -> list:
    """What the service's candidate tasks compute (features loaded once per chunk)."""
    from labelgen.tasks import chunk_candidates  # with Ray: not for `--help`

    step = conf.tuples_per_task
    return [
        chunk_candidates("bench", category, tuples[s : s + step], features.load, conf, device=device)[0]
        for category, tuples in tuples_by_cat.items()
        for s in range(0, len(tuples), step)
    ]


def as_dict(tables) -> dict:
    out = {}
    for table in tables:
        cols = table.to_pydict()
        for r in range(table.num_rows):
            out[tuple(cols[c][r] for c in KEY)] = [cols["support"][r], cols["cycle_error"][r], cols["similarity"][r]]
    return out


def same_labels(ref: dict, svc: dict) -> dict:
    """Identical label sets, support counts equal, errors and similarities equal to float32 precision."""
    missing, extra = len(ref.keys() - svc.keys()), len(svc.keys() - ref.keys())
    common = ref.keys() & svc.keys()
    support = sum(ref[k][0] != svc[k][0] for k in common)
    values = sum(abs(ref[k][1] - svc[k][1]) > 1e-3 or abs(ref[k][2] - svc[k][2]) > 1e-4 for k in common)
    return {
        "labels": len(ref),
        "missing": missing,
        "extra": extra,
        "support_differs": support,
        "values_differ": values,
        "identical": missing == extra == support == values == 0,
    }


def pair_matmuls(tuples_by_cat, features: FeatureCache) -> dict:
    """Seconds of the similarity matmuls (and their nearest neighbours) of the distinct image
    pairs the service needs: the adjacent ones of the chains, and the others of the pair check."""
    out = {"adjacent_pairs": 0, "other_pairs": 0, "adjacent_s": 0.0, "other_s": 0.0}
    for tuples in tuples_by_cat.values():
        feats = {i: Foreground.of(features.load(i)).feats for t in tuples for i in t}
        adjacent = {frozenset(t[h : h + 2]) for t in tuples for h in range(len(t) - 1)}
        every = {frozenset((t[i], t[j])) for t in tuples for i in range(len(t)) for j in range(i + 1, len(t))}
        for kind, pairs in (("adjacent", adjacent), ("other", every - adjacent)):
            t0 = time.perf_counter()
            for a, b in map(sorted, pairs):
                nearest(feats[a], feats[b], 1)
            out[f"{kind}_s"] += time.perf_counter() - t0
            out[f"{kind}_pairs"] += len(pairs)
    return out


def bench_chains(df, conf, features: FeatureCache, tuples_per_category: int) -> dict:
    """Tuples/s of both on one thread; the service's stage includes reading the chunk's features.
    On a GPU, the service's tuples/s with the same code on CUDA too."""
    torch.set_num_threads(1)
    tuples = {c: t[:tuples_per_category] for c, t in make_tuples(df, conf.pairing, features).by_category.items()}
    n = sum(len(t) for t in tuples.values())
    lconf = OmegaConf.merge(conf.labels, LIKE_REFERENCE)
    t0 = time.perf_counter()
    tables = service_candidates(tuples, features, lconf)
    svc_s = time.perf_counter() - t0
    svc = as_dict(tables)
    t0 = time.perf_counter()
    ref = reference_candidates([t for ts in tuples.values() for t in ts], features, lconf.radius)
    ref_s = time.perf_counter() - t0
    out = {
        "tuples": n,
        "service_s": svc_s,
        "reference_s": ref_s,
        "service_tuples_per_s": n / svc_s,
        "reference_tuples_per_s": n / ref_s,
        "speedup": ref_s / svc_s,
        **same_labels(ref, svc),
        **pair_matmuls(tuples, features),
    }
    if torch.cuda.is_available():
        service_candidates(tuples, features, lconf, "cuda")  # warm-up
        t0 = time.perf_counter()
        cuda = as_dict(service_candidates(tuples, features, lconf, "cuda"))
        out.update(
            cuda_tuples_per_s=n / (time.perf_counter() - t0),
            cuda_identical=same_labels(ref, cuda)["identical"],
            cuda_device=torch.cuda.get_device_name(),
        )
    return out


if __name__ == "__main__":
    from benchmarks import library_main

    sys.exit(library_main(__spec__.name, __doc__))
