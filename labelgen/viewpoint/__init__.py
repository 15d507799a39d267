"""The pose step: a viewpoint for each image that has none, before pairing.

Pairing, the pose-gap cap and the confidence model work on poses; most collections come
without them. Orient Anything (a DINOv2-L encoder with an orientation head, published
weights) estimates them where its weights are on this machine; otherwise a small head
over the backbone's cached features does, trained on posed images: the posed part of
the manifest, or the built-in rendered collection's dev split (`head`). An estimate
below `min_confidence` counts as none: its image pairs by feature similarity. Every
image's row says where its pose came from (`pose_source`: given, or the estimator) and
how sure it is (`pose_confidence`), and the run's summary counts them per category.
"""

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from ..config import Location
from ..errors import UsageError
from ..features import FLIPPED, FeatureCache, boxes, with_versions
from ..io import exists, join, read_bytes, write_bytes
from ..models import checkpoint_bytes, load_checkpoint
from . import head as viewpoint_head

log = logging.getLogger("labelgen")


@dataclass
class PoseConf:
    estimator: str = "auto"  # images without a pose: auto (orient-anything where its weights are found, else head) |
    # orient-anything | head | none (they pair by feature similarity)
    weights: Location | None = None  # Orient Anything's checkpoint (croplargeEX2/dino_weight.pt); default: the Hugging
    # Face cache
    min_confidence: float = 0.5  # an estimate below this counts as no pose: its image pairs by feature similarity
    train_on: str = "auto"  # what the head learns from: auto (the manifest's posed images when it has min_posed, else
    # the built-in collection's dev split) | manifest | builtin
    min_posed: int = 40  # posed images a manifest needs for the head to learn from them
    max_train: int = 4000  # posed images the head learns from at most (a uniform sample)
    batch_size: int = 32  # Orient Anything: images per forward
    head: viewpoint_head.HeadConf = field(default_factory=viewpoint_head.HeadConf)


default_conf = PoseConf
ANGLES = ["azimuth", "elevation", "theta"]
BUILTIN_PREFIX = "labelgen-builtin/"  # the built-in collection's ids in the feature cache: never a user's


@dataclass
class Viewpoints:
    """What the pose step did: per category how many images had a pose given, estimated,
    estimated below min_confidence (none), and by what."""

    estimator: str = "none"  # what estimated, in words
    reason: str = ""  # why this estimator
    by_category: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    learned_from: list[str] = field(default_factory=list)  # the categories the viewpoint head was trained on

    def record(self) -> dict:
        return {
            "estimator": self.estimator,
            "reason": self.reason,
            "by_category": self.by_category,
            "seconds": round(self.seconds, 2),
            "warnings": self.warnings,
            "learned_from": self.learned_from,
        }


def unposed(df: pd.DataFrame) -> pd.Series:
    """Rows without an azimuth: those the step estimates."""
    return df["azimuth"].isna() if "azimuth" in df.columns else pd.Series(True, index=df.index)


def with_sources(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with every angle column and pose_source/pose_confidence: given where an
    azimuth is."""
    df = df.assign(**{c: df[c] if c in df.columns else np.nan for c in ANGLES})
    given = df["azimuth"].notna()
    return df.assign(
        pose_source=pd.Series("given", index=df.index, dtype=object).where(given, None),
        pose_confidence=np.where(given, 1.0, np.nan),
    )


def estimate_poses(run, df: pd.DataFrame) -> tuple[pd.DataFrame, Viewpoints]:
    """`df` with poses estimated for its unposed rows (confident ones as their azimuth,
    elevation, theta), pose_source and pose_confidence; and what was done."""
    conf, t0 = run.conf.pose, time.perf_counter()
    df = with_sources(df)
    todo = df[unposed(df)]
    out = Viewpoints()
    if not todo.empty and conf.estimator != "none":
        kind, reason = choose(conf)
        if kind == "orient-anything":
            estimates, out.estimator = orient_anything(run, todo, conf)
        else:
            estimates, out.estimator, out.learned_from = head_estimates(run, df, todo, conf)
        out.reason = reason
        sure = estimates["confidence"] >= conf.min_confidence
        rows = todo.index[sure.to_numpy()]
        df.loc[rows, ANGLES] = estimates.loc[sure, ANGLES].to_numpy()
        df.loc[todo.index, "pose_source"] = f"estimated: {kind}"
        df.loc[todo.index, "pose_confidence"] = estimates["confidence"].to_numpy()
    elif not todo.empty:
        out.reason = "pose.estimator=none"
    for category, rows in df.groupby("category", sort=True):
        given = int((rows["pose_source"] == "given").sum())
        estimated = int(((rows["pose_source"] != "given") & rows["azimuth"].notna()).sum())
        out.by_category[category] = {
            "given": given,
            "estimated": estimated,
            "none": len(rows) - given - estimated,
        }
    weak = {c: n for c, n in out.by_category.items() if n["none"] and n["none"] >= n["given"] + n["estimated"]}
    if weak:
        why = (
            "no estimator"
            if conf.estimator == "none"
            else f"estimates below pose.min_confidence={conf.min_confidence:g}"
        )
        out.warnings.append(
            f"pose: most images of {', '.join(sorted(weak))} have no pose ({why}): they pair by feature similarity, "
            "with no pose-gap cap"
        )
    unknown = sorted(set(todo["category"]) - set(out.learned_from)) if out.learned_from else []
    if unknown:
        out.warnings.append(
            f"pose: the viewpoint head learned from other categories ({', '.join(out.learned_from)}); its poses for "
            f"{', '.join(unknown)} are a guess from other objects: give poses for some of their images "
            f"(pose.min_posed={conf.min_posed}) or Orient Anything's weights"
        )
    out.seconds = time.perf_counter() - t0
    return df, out


def choose(conf) -> tuple[str, str]:
    """Which estimator, and why."""
    from .orient_anything import find_weights

    if conf.estimator == "head":
        return "head", "pose.estimator=head"
    found = find_weights(conf.weights)
    if conf.estimator == "orient-anything":
        if found is None:
            from .orient_anything import OrientAnything

            OrientAnything(conf.weights)  # raises WeightsNotFound, saying where to put them
        return "orient-anything", "pose.estimator=orient-anything"
    if conf.estimator != "auto":
        raise UsageError(f"pose.estimator={conf.estimator!r}: choose auto, orient-anything, head or none")
    if found:
        return "orient-anything", f"auto: Orient Anything weights at {found}"
    return "head", (
        "auto: no Orient Anything weights found (hf download Viglong/Orient-Anything croplargeEX2/dino_weight.pt, "
        "or pose.weights=), using a viewpoint head over the backbone's features"
    )


# ---- the head --------------------------------------------------------------------------


def layouts(features: FeatureCache, ids, cells: int, mirror: bool) -> tuple[list, list]:
    """Per image its layout (head.layout) and its mirrored twin's (None where the cache has
    no mirror or the image no foreground)."""

    def one(i):
        own = viewpoint_head.layout(features.load(i), cells)
        if not mirror or own is None:
            return own, None
        return own, viewpoint_head.layout(features.load(i + FLIPPED), cells)

    with ThreadPoolExecutor(8) as pool:
        pairs = list(pool.map(one, ids))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def training_rows(run, df: pd.DataFrame, conf) -> tuple[pd.DataFrame, str]:
    """The posed images the head learns from, and what they are in words."""
    posed = df[(df["pose_source"] == "given") & df[ANGLES].notna().all(axis=1)]
    if conf.train_on in ("auto", "manifest") and len(posed) >= conf.min_posed:
        return posed, f"{len(posed)} posed images of the manifest"
    if conf.train_on == "manifest":
        raise UsageError(
            f"pose.train_on=manifest: the manifest has {len(posed)} images with azimuth, elevation and theta, "
            f"fewer than pose.min_posed={conf.min_posed}; give more poses or use pose.train_on=builtin"
        )
    from ..manifest import read_manifest
    from ..synthetic import build_collection

    rows = read_manifest(build_collection(run.conf.data.objects))
    rows = rows[rows["split"] == "dev"].assign(image_id=lambda r: BUILTIN_PREFIX + r["image_id"])
    return with_sources(
        rows
    ), f"{len(rows)} views of the built-in collection's dev split ({len(posed)} posed in the manifest)"


def head_estimates(run, df: pd.DataFrame, todo: pd.DataFrame, conf) -> tuple[pd.DataFrame, str, list[str]]:
    """Poses of `todo` from a head trained on posed images (cached under the features); what
    it is, and the categories it learned from."""
    train, what = training_rows(run, df, conf)
    if len(train) > conf.max_train:
        train = train.sample(conf.max_train, random_state=0)
    train = with_versions(train)  # the files' versions: which features to compute, and the head's cache key
    if train["image_id"].str.startswith(BUILTIN_PREFIX).any():  # their features may not be cached yet
        run.compute_features(run.features.stale(train, run.conf.features.flips))
    head = trained_head(run, train, conf)
    views, mirrors = layouts(run.features, todo["image_id"], conf.head.cells, run.conf.features.flips)
    out = pd.DataFrame(np.nan, index=range(len(todo)), columns=[*ANGLES, "confidence", "spread"])
    have = [n for n, v in enumerate(views) if v is not None]
    if have:
        mirrored = [mirrors[n] for n in have]
        pred = viewpoint_head.predict(
            head,
            torch.stack([views[n] for n in have]),
            torch.stack(mirrored) if all(m is not None for m in mirrored) else None,
        )
        for key, values in pred.items():
            out.loc[have, key] = values
    out["confidence"] = out["confidence"].fillna(0.0)
    return out, f"viewpoint head over {run.fingerprint}, trained on {what}", sorted(train["category"].unique())


def trained_head(run, train: pd.DataFrame, conf) -> viewpoint_head.ViewpointHead:
    """The head for these training images and settings: from the cache beside their
    features, or trained now and cached."""
    key = {
        "images": sorted(zip(train["image_id"], train["content"])),
        "poses": np.round(train[ANGLES].to_numpy(np.float64), 3).tolist(),
        "head": OmegaConf.to_container(conf.head),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    uri = join(run.features.folder, "viewpoint-heads", f"{digest}.pt")
    if exists(uri):
        return load_checkpoint(viewpoint_head.ViewpointHead, read_bytes(uri))
    t0 = time.perf_counter()
    views, mirrors = layouts(run.features, train["image_id"], conf.head.cells, run.conf.features.flips)
    poses = train[ANGLES].to_numpy(np.float64)
    keep = [n for n, v in enumerate(views) if v is not None]
    x, y = [views[n] for n in keep], [poses[n] for n in keep]
    twins = [n for n in keep if mirrors[n] is not None]
    x += [mirrors[n] for n in twins]
    y += [poses[n] * np.array([-1.0, 1.0, -1.0]) for n in twins]  # the mirror: minus the azimuth and the roll
    if len(x) < 8:
        raise UsageError(
            f"pose: only {len(x)} posed images with foreground to train the viewpoint head on; "
            "give poses for more images, or pose.estimator=none (pairing by feature similarity)"
        )
    head = viewpoint_head.train_head(x, np.stack(y), conf.head)
    write_bytes(uri, checkpoint_bytes(head))
    log.info("pose: viewpoint head trained on %d views in %.1f s, cached at %s", len(x), time.perf_counter() - t0, uri)
    return head


# ---- Orient Anything -------------------------------------------------------------------


class OrientWorker:
    """A Ray Data actor: Orient Anything loaded once (on the GPU Ray gave it), then batches
    of rows -> poses."""

    def __init__(self, weights: str, batch_size: int):
        from ..features import worker_device
        from .orient_anything import OrientAnything

        self.device = worker_device()
        self.model = OrientAnything(weights).to(self.device).eval()
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        from ..features import load_image
        from .orient_anything import COLUMNS, estimate

        images = [np.asarray(load_image(u)) for u in batch["uri"]]
        boxes = [None if b is None or np.isnan(np.asarray(b, float)).any() else tuple(b) for b in batch["box"]]
        out = estimate(self.model, images, boxes, self.batch_size, self.device)
        return {"image_id": np.asarray(batch["image_id"]), **{c: out[c].to_numpy() for c in COLUMNS}}


def orient_anything(run, todo: pd.DataFrame, conf) -> tuple[pd.DataFrame, str]:
    """Poses of `todo` from Orient Anything on an actor pool (one actor per GPU, else per 2 CPUs)."""
    import ray

    from ..console import Progress
    from ..features import plan_actors
    from .orient_anything import find_weights

    run.start_ray()
    plan = plan_actors(run.conf.features, ray.cluster_resources())
    found = boxes(todo)  # the manifest's, where given: the model looks at the box
    rows = pd.DataFrame({"image_id": todo["image_id"].to_numpy(), "uri": todo["uri"].to_numpy(), "box": found})
    blocks = max(plan["actors"], -(-len(rows) // conf.batch_size))
    ds = (
        ray.data.from_pandas(rows.astype(object))
        .repartition(blocks)
        .map_batches(
            OrientWorker,
            fn_constructor_kwargs={"weights": find_weights(conf.weights), "batch_size": conf.batch_size},
            batch_size=conf.batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
            num_cpus=plan["num_cpus"],
            num_gpus=plan["num_gpus"],
        )
    )
    out = []
    with Progress(len(rows), "poses", "images") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            out.append(batch)
            bar.update(len(batch))
    found = pd.concat(out).set_index("image_id").reindex(todo["image_id"])
    return found.reset_index(drop=True), "Orient Anything (DINOv2-L and its orientation head)"
