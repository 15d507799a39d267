"""`python -m labelgen.train_sphere store=... [run_id=...]`: fit a spherical mapper to the
foreground features of a committed label run's images and register it in the store.
The label pipeline then filters with it: `python -m labelgen.run labels.sphere=latest`.
"""

import io as _io
import time
import uuid

import numpy as np
import torch
from omegaconf import OmegaConf

from . import sphere
from .cli import run_command
from .features import cache_uri, load_features
from .io import join
from .labels import Foreground
from .store import LabelStore, now

default_conf = {
    "store": "labelstore",  # a folder or s3://bucket/prefix
    "run_id": None,  # the label run whose features to learn from; default: the latest committed run
    "sphere": sphere.default_conf,
}


def run_images(store: LabelStore, run_id: str | None) -> tuple[str, str, list[dict]]:
    """The run's images as mapper inputs: foreground features, grid, category, azimuth."""
    con = store.connect()
    try:
        row = con.execute(
            "SELECT run_id, backbone_fingerprint, config FROM runs WHERE status = 'committed' "
            "AND (run_id = $run OR $run IS NULL) ORDER BY finished DESC LIMIT 1", {"run": run_id}
        ).fetchone()
        if row is None:
            raise ValueError(f"no committed label run {run_id or ''} in {store}")
        run_id, fingerprint, run_conf = row[0], row[1], OmegaConf.create(row[2])
        images = con.execute("SELECT image_id, category, azimuth FROM images WHERE run_id = ? AND n_fg > 0", [run_id]).fetchall()
    finally:
        con.close()
    cache_root = run_conf.features.cache or join(store.uri, "features")
    out = []
    for image_id, category, azimuth in images:
        fg = Foreground.of(load_features(cache_uri(cache_root, fingerprint, image_id)))
        out.append({"feats": fg.feats, "grid": fg.grid, "category": category,
                    "azimuth": np.nan if azimuth is None else azimuth})
    return run_id, fingerprint, out


def load_mapper(data: bytes) -> sphere.SphereMapper:
    blob = torch.load(_io.BytesIO(data), map_location="cpu", weights_only=True)
    mapper = sphere.SphereMapper(**blob["config"])
    mapper.load_state_dict(blob["state_dict"])
    return mapper.eval()


def train(conf) -> int:
    store = LabelStore(conf.store)
    run_id, fingerprint, images = run_images(store, conf.run_id)
    t0 = time.perf_counter()
    mapper, history = sphere.train_mapper(images, conf.sphere, log=lambda h: print(
        "step {step}: loss {loss:.3f} (recon {recon:.3f}, triplet {triplet:.3f}, orientation {orientation:.3f}, "
        "viewpoint {viewpoint:.3f})".format(**h), flush=True))
    buf = _io.BytesIO()
    torch.save({"config": mapper.config(), "state_dict": mapper.state_dict()}, buf)
    record = store.save_sphere({
        "sphere_id": f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}", "label_run": run_id,
        "backbone_fingerprint": fingerprint, "categories": mapper.categories, "images": len(images),
        "history": history, "train_s": round(time.perf_counter() - t0, 1), "config": OmegaConf.to_yaml(conf.sphere),
        "created": now()}, buf.getvalue())
    print(f"sphere {record['sphere_id']}: {len(images)} images of run {run_id}, {conf.sphere.steps} steps in "
          f"{record['train_s']} s, final loss {history[-1]['loss']:.3f}\n  weights {record['checkpoint']}\n"
          f"  use it: python -m labelgen.run labels.sphere={record['sphere_id']} (or latest)")
    return 0


def resolve(store: LabelStore, name: str, fingerprint: str) -> dict:
    """The mapper record named by `labels.sphere` (an id or 'latest'), checked against the features."""
    records = [r for r in store.spheres() if name in ("latest", r["sphere_id"])]
    if not records:
        raise ValueError(f"labels.sphere={name}: no such spherical mapper in {store}; train one with "
                         f"`python -m labelgen.train_sphere store={store}`")
    record = records[-1]
    if record["backbone_fingerprint"] != fingerprint:
        raise ValueError(f"spherical mapper {record['sphere_id']} was trained on features {record['backbone_fingerprint']}, "
                         f"this run has {fingerprint}: train one on these features")
    return record


def main(argv=None) -> int:
    return run_command(default_conf, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
