"""`python -m labelgen.run [key=value ...]`: manifest -> features -> tuples -> chains -> store.

With no arguments it renders the built-in collection of 3D object categories
(once; `data.builtin=demo` takes the planar photo demo instead) and labels it on
a local Ray instance; with RAY_ADDRESS set, or under `ray job submit`, it
runs on that cluster. The algorithms live in plain modules; this file only
schedules them.
"""

import logging
import sys
import time
import uuid

import numpy as np
import pandas as pd
import ray
from omegaconf import OmegaConf

from . import backbones, demo, features, labels, pairing, ray_utils, synthetic
from .adapted import adapt_features, label_fingerprint, resolve_model
from .cli import run_command
from .config import config_hash, parse_overrides
from .console import Progress, Stages
from .features import cache_uri, extract_features, load_features
from .io import join, read_bytes
from .sphere import default_conf as sphere_conf
from .sphere import map_image
from .train_sphere import fit as fit_sphere
from .train_sphere import load_mapper, mapper_inputs
from .train_sphere import resolve as resolve_sphere
from .train_sphere import wanted as sphere_wanted
from .manifest import read_manifest
from .store import IMAGE_SCHEMA, LabelStore, images_table, sum_counts

log = logging.getLogger("labelgen")

default_conf = {
    "data": {
        "manifest": None,  # a manifest (Parquet or CSV); none: the built-in collection
        "builtin": "objects",  # without a manifest: objects (rendered 3D categories) | demo (photos seen as planes)
        "objects": synthetic.default_conf,
        "demo": demo.default_conf,
    },
    "store": "labelstore",  # a folder or s3://bucket/prefix: labels, runs, feature cache
    "catalog": None,  # the store's catalog: none = the one it was made with (new: catalog.sqlite in it) | postgres:<libpq string> | sqlite:<file>
    "run_id": None,  # default: a new id from the time
    "backbone": backbones.default_conf,
    "features": features.default_conf,
    "pairing": pairing.default_conf,
    "labels": labels.default_conf,
    "sphere": sphere_conf,  # training, when labels.sphere=auto finds no mapper for the run's features
    "ray": ray_utils.default_conf,
}
# The demo's views are 15 deg apart: 30 deg bins make a 4-tuple sweep about 90 deg. Its planar
# views share every point up to 90 deg, where the confidence model, fitted on 3D objects, would
# drop the far pairs the demo is there to show: no confidence threshold.
DEMO_PRESET = {"pairing": {"bin_deg": 30.0}, "labels": {"min_confidence": 0.0}}


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def chunk_candidates(run_id, category, tuples, cache_root, fingerprint, conf, rotations=None, device="cpu"):
    """Chain one chunk of tuples into candidate labels, reading each of its images once;
    returns the labels, the counts per stage and the features read."""
    ids = sorted({i for t in tuples for i in t})
    feats = {i: load_features(cache_uri(cache_root, fingerprint, i)) for i in ids}
    table, stats = labels.candidates(run_id, category, tuples, feats, conf, rotations, device)
    return table, stats, feats


@ray.remote(num_cpus=1)
def candidate_task(run_id, category, chunk, tuples, cache_root, fingerprint, conf, rotations, parts, store_uri):
    """Map: one chunk's candidate labels, written per vote partition; returns the counts per
    stage and each image's size and foreground."""
    table, stats, feats = chunk_candidates(run_id, category, tuples, cache_root, fingerprint, conf, rotations)
    store = LabelStore(store_uri)
    for part, rows in labels.by_partition(table, parts):
        store.write_candidates(run_id, category, part, chunk, rows)
    return stats, {i: (f.width, f.height, int(f.fg.sum())) for i, f in feats.items()}


@ray.remote(num_cpus=1)
def vote_task(run_id, category, part, conf, store_uri, sphere, *_chunks):
    """Reduce one vote partition of a category (it starts once the category's candidate tasks,
    `_chunks`, are done): vote, keep the labels whose pair agrees and that are confident
    enough, filter on the sphere if asked; write them with the counts."""
    store = LabelStore(store_uri)
    table = labels.vote([store.candidates(run_id, category, part)], conf)
    stats = {"voted": table.num_rows}
    table = labels.pair_check(table, conf.pair_radius)
    stats["after_pair_check"] = table.num_rows
    table = labels.confidence_filter(table, conf)
    stats["confident"] = table.num_rows
    if sphere is not None and table.num_rows:
        t0 = time.perf_counter()
        mapper, (cache_root, fingerprint) = load_mapper(read_bytes(sphere["checkpoint"])), sphere["cache"]
        ids = sorted(set(table.column("src_image_id").to_pylist()) | set(table.column("tgt_image_id").to_pylist()))
        fgs = {i: labels.Foreground.of(load_features(cache_uri(cache_root, fingerprint, i))) for i in ids}
        points = {i: map_image(mapper, fg.feats) for i, fg in fgs.items()}
        table = labels.sphere_filter(table, fgs, points, conf.sphere_deg)
        stats["sphere_filter_s"] = time.perf_counter() - t0
    stats["labels"] = table.num_rows
    store.write_part(run_id, category, part, table, stats)
    return stats


def train_sphere(conf, store, df, cache_root, fingerprint, run_id) -> dict:
    """labels.sphere=auto without a mapper for these features: fit one to the run's images
    (the driver's cores) and register it, so that later runs reuse it."""
    pose = df["azimuth"] if "azimuth" in df.columns else pd.Series(np.nan, index=df.index)
    images = mapper_inputs(cache_root, fingerprint, zip(df["image_id"], df["category"], pose))
    log.info("spherical mapper: none registered for features %s and these categories; fitting one to %d images "
             "(labels.sphere=auto; labels.sphere=none turns the filter off)", fingerprint, len(images))
    with Progress(conf.steps, "sphere", "steps") as bar:
        record = fit_sphere(store, images, fingerprint, run_id, conf, log=lambda h: bar.update(h["step"] - bar.done),
                            categories=df["category"].unique())
    log.info("spherical mapper %s: %d steps in %.1f s, registered", record["sphere_id"], conf.steps, record["train_s"])
    return record


def make_tuples(df: pd.DataFrame, conf, cache_root: str, fingerprint: str):
    """Tuples per category; the images left out because they lack the pose their category
    is paired by (bad_inputs rows); and per category without a tuple, why and what to do."""
    def descriptors(rows):  # only categories without pose need them
        return np.stack([load_features(cache_uri(cache_root, fingerprint, i)).descriptor() for i in rows["image_id"]])

    out, left_out, untupled = {}, [], {}
    for category, rows in df.groupby("category", sort=True):
        mode = pairing.pose_mode(rows, conf)
        cols = " and ".join(pairing.POSE_COLUMNS.get(mode, []))
        for _, r in rows[pairing.unplaced(rows, mode)].iterrows():
            left_out.append({"image_id": r["image_id"], "uri": r["uri"], "stage": "pairing",
                             "error": f"{r['uri']}: no {cols} while category '{category}' is paired by {mode} pose: left out of "
                                      "every tuple; give its pose, or run with pairing.pose=similarity"})
        idx = pairing.category_tuples(rows, conf, descriptors)
        ids = rows["image_id"].to_numpy()
        out[category] = [tuple(ids[t]) for t in idx]
        if not out[category]:
            untupled[category] = (f"its {len(rows)} images make no pair one hop apart ({mode} pose, pairing.bin_deg={conf.bin_deg:g}): "
                                  "widen pairing.bin_deg, add views of other poses, or pair by pairing.pose=similarity")
            log.warning("category '%s' gets no labels: %s", category, untupled[category])
        elif idx.shape[1] < conf.k:
            log.info("category '%s': its poses make no tuple of K=%d, so its tuples have %d images", category, conf.k,
                     idx.shape[1])
    return out, left_out, untupled


IMAGE_COLUMNS = [n for n in IMAGE_SCHEMA.names if n not in ("run_id", "width", "height", "n_fg")]


def run_labels(df, tuples_by_cat, conf, run_id, cache_root, fingerprint, store, sphere=None) -> dict:
    """Candidate tasks per chunk of tuples, then the vote tasks of each category's partitions;
    a category's images file (with the chains' counts) is written once its chunks are in.
    Returns the seconds until the last chain and until the last vote."""
    conf = OmegaConf.create(OmegaConf.to_container(conf))
    step = conf.tuples_per_task
    columns = [c for c in IMAGE_COLUMNS if c in df.columns]
    category_of, left, parts, images, votes = {}, {}, {}, {}, []
    for category, tuples in tuples_by_cat.items():
        parts[category] = labels.vote_parts(len(tuples), conf)
        rows = df[df["category"] == category]
        images[category] = rows[columns]
        rotations = ray.put(pairing.view_rotations(rows))
        refs = [candidate_task.remote(run_id, category, n, tuples[s : s + step], cache_root, fingerprint, conf, rotations,
                                      parts[category], store.uri)
                for n, s in enumerate(range(0, len(tuples), step))]
        votes += [vote_task.remote(run_id, category, p, conf, store.uri, sphere, *refs) for p in range(parts[category])]
        category_of.update(dict.fromkeys(refs, category))
        left[category] = len(refs)
    t0, pending, done_chunks = time.perf_counter(), list(category_of), {c: [] for c in tuples_by_cat}
    with Progress(sum(len(t) for t in tuples_by_cat.values()), "chains", "tuples") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            category = category_of[done[0]]
            done_chunks[category].append(ray.get(done[0]))
            bar.update(done_chunks[category][-1][0]["tuples"])
            if len(done_chunks[category]) == left[category]:
                write_images(store, run_id, category, images.pop(category), done_chunks.pop(category), parts[category])
    chains_s = time.perf_counter() - t0
    with Progress(len(votes), "vote", "partitions") as bar:
        while votes:
            done, votes = ray.wait(votes, num_returns=1)
            ray.get(done)
            bar.update(1)
    return {"chains_s": chains_s, "vote_s": time.perf_counter() - t0 - chains_s}


def write_images(store, run_id, category, images: pd.DataFrame, chunks, parts):
    """The category's images (sizes and foreground as its chunks saw them) and the chains' counts."""
    seen = {i: size for _, chunk_seen in chunks for i, size in chunk_seen.items()}
    sizes = pd.DataFrame.from_dict(seen, orient="index", columns=["width", "height", "n_fg"])
    store.write_images(run_id, category, images_table(images.join(sizes, on="image_id").assign(run_id=run_id)),
                       sum_counts(stats for stats, _ in chunks), parts)


def sphere_line(s: dict, c: dict, sphere_deg: float) -> str:
    how = f"fitted now to {s['images']} images in {s['trained_s']:.0f} s" if s["trained_s"] else "registered"
    return (f"  sphere    mapper {s['sphere_id']} ({how}), filter {s['filter_s']:.1f} s of task time: {c.get('labels', 0):,} of "
            f"{c.get('confident', 0):,} confident labels map within {sphere_deg:g} deg")


def summary(run_id, store, counts, sphere_deg) -> str:
    c = counts
    hops = " -> ".join(f"{c.get(f'after_hop{h}', 0):,}" for h in range(1, c["k"]))
    return "\n".join(
        [
            f"run {run_id}: committed",
            f"  images    {c['images']:,} in {c['categories']} categories; {c['bad_inputs']} bad (see bad_inputs)",
            f"  features  {c['features_computed']:,} computed ({c['features_per_s']:.1f} images/s overall, "
            f"{c['features_per_actor_s']:.1f} per busy actor), "
            f"{c['features_cached']:,} from cache; backbone {c['backbone']} ({c['backbone_reason']})",
            *([f"            by {'; '.join(f'{k}: {v}' for k, v in c['feature_actors'].items())}"] if c.get("feature_actors") else []),
            *([f"            labels on {c['label_features']} (labels.features; refined in {c['adapter_s']:.1f} s)"]
              if c["label_features"] != c["backbone"] else []),
            f"  tuples    {c.get('tuples', 0):,} of K={c['k']} ({c['tuples_per_s']:.1f} tuples/s)"
            + "".join(f"; {cat}: K={k} (its poses allow no longer)" for cat, k in c.get("tuple_k", {}).items()),
            *[f"            no tuple for '{cat}': {why}" for cat, why in c.get("no_tuples", {}).items()],
            f"  chains    {c.get('seeds', 0):,} foreground seeds -> cycle check per hop: {hops}",
            f"  labels    {c.get('composed', 0):,} composed over all ordered pairs -> {c.get('candidates', 0):,} within the "
            f"pose-gap cap -> {c.get('voted', 0):,} after the vote -> {c.get('after_pair_check', 0):,} after the pair check -> "
            f"{c.get('confident', 0):,} confident -> {c.get('labels', 0):,} stored"
            f"{' after the spherical filter' if c.get('confident') != c.get('labels') else ''} ({c['labels_per_s']:,.0f} labels/s)",
            *([sphere_line(s, c, sphere_deg)] if (s := c.get("sphere")) else []),
            f"  store     {store}  (python -m queries labels_per_category --store {store})",
        ]
    )


def presets(argv: list[str]) -> dict | None:
    return DEMO_PRESET if "data.builtin=demo" in argv and not any(a.startswith("data.manifest=") for a in argv) else None


def parse(argv: list[str]):
    return parse_overrides(default_conf, argv, presets(argv))


def builtin_collection(conf) -> str:
    """The manifest of the built-in collection, rendered on first use."""
    if conf.builtin == "demo":
        return demo.build_demo(conf.demo)
    if conf.builtin == "objects":
        return synthetic.build_collection(conf.objects)
    raise ValueError(f"data.builtin={conf.builtin}: choose objects or demo, or give data.manifest=")


def prepare(conf, stages: Stages | None = None):
    """Everything that can fail on bad input, before any work: manifest, weights."""
    stages = stages or Stages()
    with stages("collection"):
        manifest_uri = conf.data.manifest or builtin_collection(conf.data)
        df = read_manifest(manifest_uri)
    with stages("backbone"):
        backbone, reason = backbones.build_backbone(conf.backbone)
    image_size = backbone.check_size(conf.backbone.image_size or backbone.image_size)
    backbone_conf = OmegaConf.merge(conf.backbone, {"name": backbone.name, **backbone.sources()})
    fingerprint = backbone.fingerprint(image_size, variant=f"mask={conf.features.mask_fallback}")
    return manifest_uri, df, backbone_conf, reason, image_size, fingerprint


def execute(conf, store, run_id, df, backbone_conf, reason, image_size, fingerprint, sphere, model, stages) -> dict:
    """Features (and the adapter's, when relabelling), tuples, chains, vote, commit;
    categories a previous attempt finished are skipped."""
    with stages("ray start"):
        where = ray_utils.init_ray(conf.ray)
    resources = ray.cluster_resources()
    log.info("ray: %s; %g CPUs, %g GPUs", where, resources.get("CPU", 0), resources.get("GPU", 0))
    cache_root = conf.features.cache or join(store.uri, "features")
    results, feat_s = extract_features(df, conf.features, backbone_conf, image_size, cache_root, fingerprint)
    stages.add("features", feat_s)
    failed = results[results["error"] != ""]
    uris = dict(zip(df["image_id"], df["uri"]))
    bad = [{"image_id": i, "uri": uris[i], "stage": "features", "error": e} for i, e in zip(failed.image_id, failed.error)]
    good = df[~df["image_id"].isin(failed["image_id"])]
    adapt_s = adapt_features(good["image_id"].tolist(), model, cache_root, fingerprint) if model else 0.0
    if model:
        stages.add("adapter", adapt_s)
    features = label_fingerprint(fingerprint, model)  # the features labels are made on
    with stages("tuples"):
        tuples, left_out, untupled = make_tuples(good, conf.pairing, cache_root, features)
    bad += left_out
    done = store.staged_categories(run_id)
    if done:
        log.info("resuming run %s: %d of %d categories already done", run_id, len(done & set(tuples)), len(tuples))
    sphere_s = 0.0
    if sphere_wanted(conf.labels.sphere):
        if sphere is None:  # auto: a mapper registered for these features and the categories that have features
            sphere = resolve_sphere(store, "auto", features, good["category"].unique())
        if sphere is None:
            sphere_s = time.perf_counter()
            sphere = train_sphere(conf.sphere, store, good, cache_root, features, run_id)
            sphere_s = time.perf_counter() - sphere_s
            stages.add("sphere", sphere_s)
        store.update_run(run_id, sphere_id=sphere["sphere_id"])  # a resumed attempt filters with the same mapper
        sphere = {**sphere, "cache": (cache_root, features)}
        log.info("spherical filter: mapper %s, %.1f deg", sphere["sphere_id"], conf.labels.sphere_deg)
    todo = {c: t for c, t in tuples.items() if c not in done}
    wall = run_labels(good, todo, conf.labels, run_id, cache_root, features, store, sphere)
    stages.add("chains", wall["chains_s"])
    stages.add("vote", wall["vote_s"])
    totals = sum_counts(store.category_stats(run_id).values())
    filter_s = totals.pop("sphere_filter_s", 0.0)
    counts = {
        **totals,
        "images": len(df),
        "categories": len(tuples),
        "bad_inputs": len(bad),
        "features_computed": len(results) - len(failed),
        "features_cached": len(df) - len(results),
        "features_s": round(feat_s, 3),
        "features_per_s": (len(results) - len(failed)) / feat_s if feat_s else 0.0,
        "features_per_actor_s": len(results) / results["seconds"].sum() if len(results) else 0.0,
        "feature_actors": results["actor"].value_counts().sort_index().to_dict(),  # where -> images
        "backbone": fingerprint,
        "backbone_reason": reason,
        "label_features": features,
        "adapter_s": round(adapt_s, 1),
        "k": conf.pairing.k,
        "tuple_k": {c: len(t[0]) for c, t in tuples.items() if t and len(t[0]) < conf.pairing.k},  # shortened
        "no_tuples": untupled,  # category -> why it got none, and the fix
        "chain_s": round(wall["chains_s"], 3),
        "vote_s": round(wall["vote_s"], 3),
        "sphere": sphere and {"sphere_id": sphere["sphere_id"], "trained_s": round(sphere_s, 1), "images": sphere["images"],
                              "filter_s": round(filter_s, 1)},
        "tuples_per_s": totals.get("tuples", 0) / wall["chains_s"] if wall["chains_s"] else 0.0,
        "labels_per_s": totals.get("labels", 0) / sum(wall.values()) if sum(wall.values()) else 0.0,
        "ray": where,
    }
    counts = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in counts.items()}
    with stages("commit"):
        store.commit(run_id, counts, bad)
    return counts


def label(conf) -> int:
    stages = Stages()
    manifest_uri, df, backbone_conf, reason, image_size, fingerprint = prepare(conf, stages)
    log.info("backbone %s (%s), features %s", backbone_conf.name, reason, fingerprint)
    store = LabelStore(conf.store, conf.catalog)
    model = resolve_model(store, conf.labels.features, fingerprint)
    features = label_fingerprint(fingerprint, model)
    run_id = conf.run_id or new_run_id()
    # `latest` or an id: checked now, before any work; `auto` is resolved after the features
    named = sphere_wanted(conf.labels.sphere) and conf.labels.sphere != "auto"
    sphere = resolve_sphere(store, conf.labels.sphere, features) if named else None
    stored = OmegaConf.masked_copy(conf, [k for k in conf if k != "catalog"])  # its string may hold a password
    digest = config_hash(OmegaConf.masked_copy(stored, [k for k in stored if k not in ("run_id", "ray")]))
    record = store.begin_run(
        {"run_id": run_id, "manifest": manifest_uri, "backbone": backbone_conf.name, "backbone_fingerprint": fingerprint,
         "label_features": features, "config": OmegaConf.to_yaml(stored), "config_hash": digest}
    )
    if record["config_hash"] != digest:
        raise ValueError(f"run_id={run_id} was started with another config (hash {record['config_hash']}, now {digest}; "
                         "or with another version of labelgen, whose defaults differ): resume it with the same overrides, "
                         "or choose a new run_id")
    if record["label_features"] != features:  # labels.features=promoted, and another model promoted since
        raise ValueError(f"run_id={run_id} was started on features {record['label_features']}, labels.features="
                         f"{conf.labels.features} now gives {features}: resume it with labels.features=adapter:<that model>, "
                         "or choose a new run_id")
    if record.get("sphere_id"):  # the mapper a previous attempt filtered with, whatever is latest now
        sphere = resolve_sphere(store, record["sphere_id"], features)
    if store.is_committed(run_id):
        print(f"run {run_id} is already committed in {store}; nothing to do")
        return 0
    log.info("run %s; if it stops, the same command with run_id=%s resumes it", run_id, run_id)
    try:
        counts = execute(conf, store, run_id, df, backbone_conf, reason, image_size, fingerprint, sphere, model, stages)
    except BaseException as e:
        store.fail_run(run_id, f"{type(e).__name__}: {e}")
        raise
    print(summary(run_id, store, counts, conf.labels.sphere_deg), flush=True)
    print(f"  time      {stages.line()}", flush=True)
    if not counts.get("labels"):
        log.warning("run %s stored 0 labels: %s", run_id, "; ".join(f"'{c}': {why}" for c, why in counts["no_tuples"].items())
                    or "every chain failed its cycle check or the filters removed every label (see python -m queries stage_yield)")
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, label, argv, presets)


if __name__ == "__main__":
    sys.exit(main())
