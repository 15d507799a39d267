"""`python -m labelgen.train_sphere store=... [run_id=...]`: fit a spherical mapper to the
foreground features of a committed label run's images and register it in the store.
The label pipeline then filters with it: `python -m labelgen.run labels.sphere=latest`.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from . import sphere
from .cli import run_command
from .config import StoreConf
from .errors import UsageError
from .features import FeatureCache
from .labels import Foreground
from .models import checkpoint_bytes
from .sphere import SphereConf
from .store import LabelStore, new_id, now


@dataclass
class TrainSphereConf(StoreConf):
    run_id: str | None = None  # the label run whose features to learn from; default: the latest committed run
    sphere: SphereConf = field(default_factory=SphereConf)


default_conf = TrainSphereConf


def mapper_inputs(features: FeatureCache, rows) -> list[dict]:
    """Mapper inputs of images (image_id, category, azimuth): foreground features, grid,
    category, azimuth; images without foreground are left out."""
    out = []
    for image_id, category, azimuth in rows:
        fg = Foreground.of(features.load(image_id))
        if len(fg.feats):
            out.append(
                {
                    "feats": fg.feats,
                    "grid": fg.grid,
                    "category": category,
                    "azimuth": np.nan if azimuth is None or pd.isna(azimuth) else float(azimuth),
                }
            )
    return out


def run_images(store: LabelStore, run_id: str | None) -> tuple[str, str, list[dict]]:
    """The images with foreground of every committed run on the features of `run_id` (default:
    the latest committed run), as mapper inputs: a run that labelled only new images, or none,
    still fits on the whole collection."""
    row = store.latest_run(run_id, current=False)
    if row is None:
        raise UsageError(f"no committed label run {run_id or ''} in {store}")
    run_id, fingerprint, run_conf = row["run_id"], row["label_features"], OmegaConf.create(row["config"])
    con = store.connect()
    try:
        images = con.execute(
            "SELECT DISTINCT ON (image_id) image_id, category, azimuth FROM images JOIN runs USING (run_id) "
            "WHERE status = 'committed' AND label_features = ? AND n_fg > 0 ORDER BY image_id",
            [fingerprint],
        ).fetchall()
    finally:
        con.close()
    features = FeatureCache(store.feature_cache(run_conf.features.cache), fingerprint)
    return run_id, fingerprint, mapper_inputs(features, images)


def fit(store: LabelStore, images: list[dict], fingerprint: str, label_run: str, conf, log=None, categories=()) -> dict:
    """Train a mapper on `images` (mapper inputs) and register it for their categories and
    `categories` (those it was asked to cover); returns its record."""
    if not images:
        raise UsageError(
            f"no image of run {label_run} has foreground features to fit a spherical mapper to: "
            "check its masks (python -m queries empty_images), or run with labels.sphere=none"
        )
    t0 = time.perf_counter()
    mapper, history = sphere.train_mapper(images, conf, log=log)
    return store.save_sphere(
        {
            "sphere_id": new_id(),
            "label_run": label_run,
            "backbone_fingerprint": fingerprint,
            "categories": sorted(set(mapper.categories) | set(categories)),
            "images": len(images),
            "history": history,
            "train_s": round(time.perf_counter() - t0, 1),
            "config": OmegaConf.to_yaml(conf),
            "created": now(),
        },
        checkpoint_bytes(mapper),
    )


def train(conf) -> int:
    store = LabelStore(conf.store, conf.catalog)
    run_id, fingerprint, images = run_images(store, conf.run_id)
    record = fit(
        store,
        images,
        fingerprint,
        run_id,
        conf.sphere,
        log=lambda h: print(
            "step {step}: loss {loss:.3f} (recon {recon:.3f}, triplet {triplet:.3f}, orientation {orientation:.3f}, "
            "viewpoint {viewpoint:.3f})".format(**h),
            flush=True,
        ),
    )
    print(
        f"sphere {record['sphere_id']}: {len(images)} images of run {run_id}, {conf.sphere.steps} steps in "
        f"{record['train_s']} s, final loss {record['history'][-1]['loss']:.3f}\n  weights {record['checkpoint']}\n"
        f"  use it: python -m labelgen.run labels.sphere={record['sphere_id']} (or latest)"
    )
    return 0


def wanted(name) -> bool:
    """Whether `labels.sphere` asks for the spherical filter (none or null: no)."""
    return name not in (None, "none")


def resolve(store: LabelStore, name: str, fingerprint: str, categories=()) -> dict | None:
    """The mapper record named by `labels.sphere`, checked against the features: an id,
    latest, or auto (the latest on these features that knows every one of `categories`;
    None when there is none, so the caller trains one)."""
    if name == "auto":
        fits = [
            r
            for r in store.spheres()
            if r["backbone_fingerprint"] == fingerprint and set(categories) <= set(r["categories"])
        ]
        return fits[-1] if fits else None
    records = [r for r in store.spheres() if name in ("latest", r["sphere_id"])]
    if not records:
        raise UsageError(
            f"labels.sphere={name}: no such spherical mapper in {store}; train one with "
            f"`python -m labelgen.train_sphere store={store}`, or use labels.sphere=auto (labels.sphere=none: "
            "no spherical filter)"
        )
    record = records[-1]
    if record["backbone_fingerprint"] != fingerprint:
        raise UsageError(
            f"spherical mapper {record['sphere_id']} was trained on features {record['backbone_fingerprint']}, "
            f"this run has {fingerprint}: train one on these features, or use labels.sphere=auto"
        )
    return record


def main(argv=None) -> int:
    return run_command(default_conf, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
