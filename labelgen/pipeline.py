"""A label run as a library: manifest -> features -> tuples -> chains -> store.

`label(conf)` runs one (`python -m labelgen.run` is its command line); `relabel(...)`
labels a committed run's collection again on an adapter's features (the trainer's loop).
The algorithms live in plain modules and the Ray tasks in `tasks`; this file resolves a
run once, runs its stages in order and commits it.

A run does only what is new: images that a committed run already labelled with the
same label features and label config anchor no tuple, and no label between two of
them is made again, so a repeated run adds nothing and a grown collection costs what
it grew by (`new_only=false` labels every image again, superseding the old labels).
"""

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from . import backbones, demo, foreground, ray_utils, synthetic, viewpoint
from .backbones import BackboneConf
from .config import Location, StoreConf, config_hash, known_keys, parse_overrides
from .console import Progress, Stages
from .demo import DemoConf
from .errors import UsageError
from .features import FeatureCache, FeaturesConf, extract_features, with_versions
from .foreground import ForegroundConf
from .io import Fault
from .labels import LabelsConf
from .manifest import read_manifest
from .pairing import PairingConf
from .ray_utils import RayConf
from .sphere import SphereConf
from .store import LabelStore, RunFiles, new_id, sum_counts
from .synthetic import ObjectsConf
from .train_sphere import fit as fit_sphere
from .train_sphere import mapper_inputs
from .train_sphere import resolve as resolve_sphere
from .train_sphere import wanted as sphere_wanted
from .tuples import Tuples, make_tuples
from .viewpoint import PoseConf

log = logging.getLogger("labelgen")


@dataclass
class DataConf:
    manifest: Location | None = None  # a manifest (Parquet or CSV); none: the built-in collection
    builtin: str = "objects"  # without a manifest: objects (rendered 3D categories) | demo (photos seen as planes)
    objects: ObjectsConf = field(default_factory=ObjectsConf)
    demo: DemoConf = field(default_factory=DemoConf)


@dataclass
class RunConf(StoreConf):
    data: DataConf = field(default_factory=DataConf)
    run_id: str | None = None  # default: a new id from the time
    new_only: bool = True  # label only images no committed run labelled with these label features and config; false:
    # all again (superseding)
    backbone: BackboneConf = field(default_factory=BackboneConf)
    features: FeaturesConf = field(default_factory=FeaturesConf)
    foreground: ForegroundConf = field(default_factory=ForegroundConf)  # masks of images without one, in the actors
    pose: PoseConf = field(default_factory=PoseConf)  # viewpoints of images without one, before pairing
    pairing: PairingConf = field(default_factory=PairingConf)
    labels: LabelsConf = field(default_factory=LabelsConf)
    sphere: SphereConf = field(default_factory=SphereConf)  # training, when labels.sphere=auto finds no mapper
    ray: RayConf = field(default_factory=RayConf)


default_conf = RunConf
# The demo's views are 15 deg apart: 30 deg bins make a 4-tuple sweep about 90 deg. Its planar
# views share every point up to 90 deg, where the confidence model, fitted on 3D objects, would
# drop the far pairs the demo is there to show: no confidence threshold.
DEMO_PRESET = {"pairing": {"bin_deg": 30.0}, "labels": {"keep": None}}
# what a run's labels depend on beside its label features: runs that agree on both label an image alike
LABEL_KEYS = ("pairing", "labels", "sphere")


def label_hash(conf) -> str:
    """The hash of the config that makes labels (LABEL_KEYS, without labels.features, which
    the run's label features fingerprint stands for)."""
    body = OmegaConf.masked_copy(conf, list(LABEL_KEYS))
    body.labels = OmegaConf.masked_copy(body.labels, [k for k in body.labels if k != "features"])
    return config_hash(body)


@dataclass
class Inputs:
    """What can fail on bad input, checked before any work: the manifest and the backbone."""

    manifest: str
    df: pd.DataFrame
    backbone: DictConfig  # the backbone config with the sources its weights came from
    backbone_reason: str  # why this backbone (auto)
    image_size: int
    fingerprint: str  # of the backbone's features in the cache


@dataclass
class Run(Inputs):
    """One label run, resolved once: every stage reads what it needs from here."""

    conf: DictConfig = None
    store: LabelStore = None
    run_id: str = ""
    model: dict | None = None  # the adapter whose features the labels are made on (labels.features)
    features: FeatureCache = None  # the backbone's, in the feature cache
    label_features: FeatureCache = None  # those labels are made on: the backbone's, or the adapter's refinement
    sphere: dict | None = None  # the spherical mapper (labels.sphere); auto: resolved after the features
    labelled: set[str] = field(default_factory=set)  # images already labelled with these features and label config
    started: str = ""  # when the run's first attempt started: what every attempt compares committed runs with
    replaced: set[str] = field(default_factory=set)  # images whose file changed since their features were cached
    stages: Stages = field(default_factory=Stages)
    ray: str | None = None  # where Ray runs, once started

    @property
    def files(self) -> RunFiles:
        """The run's own files: what its tasks write, and all they get of the store."""
        return self.store.files(self.run_id)

    def start_ray(self) -> str:
        """Start or join Ray on first use: a run with nothing to compute never waits for it."""
        if self.ray is None:
            import ray

            with self.stages("ray start"):
                self.ray = ray_utils.init_ray(self.conf.ray)
            resources = ray.cluster_resources()
            log.info("ray: %s; %g CPUs, %g GPUs", self.ray, resources.get("CPU", 0), resources.get("GPU", 0))
        return self.ray

    def compute_features(self, todo: pd.DataFrame) -> tuple[pd.DataFrame, float]:
        """Features (and estimated masks) of `todo`'s rows (FeatureCache.stale) on the actor pool:
        the per-image results and the seconds it took."""
        return extract_features(
            todo,
            self.conf.features,
            self.backbone,
            self.image_size,
            self.features,
            self.start_ray,
            OmegaConf.to_container(self.conf.foreground),
        )


def train_sphere(run: Run, df: pd.DataFrame) -> dict:
    """labels.sphere=auto without a mapper for these features: fit one to the run's images
    (the driver's cores) and register it, so that later runs reuse it."""
    conf = run.conf.sphere
    pose = df["azimuth"] if "azimuth" in df.columns else pd.Series(np.nan, index=df.index)
    images = mapper_inputs(run.label_features, zip(df["image_id"], df["category"], pose))
    log.info(
        "spherical mapper: none registered for features %s and these categories; fitting one to %d images "
        "(labels.sphere=auto; labels.sphere=none turns the filter off)",
        run.label_features.fingerprint,
        len(images),
    )
    with Progress(conf.steps, "sphere", "steps") as bar:
        record = fit_sphere(
            run.store,
            images,
            run.label_features.fingerprint,
            run.run_id,
            conf,
            log=lambda h: bar.update(h["step"] - bar.done),
            categories=df["category"].unique(),
        )
    log.info("spherical mapper %s: %d steps in %.1f s, registered", record["sphere_id"], conf.steps, record["train_s"])
    return record


def sphere_line(s: dict, c: dict, sphere_deg: float) -> str:
    how = f"fitted now to {s['images']} images in {s['trained_s']:.0f} s" if s["trained_s"] else "registered"
    return (
        f"  sphere    mapper {s['sphere_id']} ({how}), filter {s['filter_s']:.1f} s of task time: "
        f"{c.get('labels', 0):,} of {c.get('confident', 0):,} confident labels map within {sphere_deg:g} deg"
    )


def summary(run_id, store, counts, sphere_deg) -> str:
    c = counts
    return "\n".join(
        [
            f"run {run_id}: committed",
            f"  images    {c['images']:,} in {c['categories']} categories; {c['bad_inputs']} bad (see bad_inputs)",
            f"  features  {c['features_computed']:,} computed ({c['features_per_s']:.1f} images/s overall, "
            f"{c['features_per_actor_s']:.1f} per busy actor), "
            f"{c['features_cached']:,} from cache; backbone {c['backbone']} ({c['backbone_reason']})",
            *(
                [f"            by {'; '.join(f'{k}: {v}' for k, v in c['feature_actors'].items())}"]
                if c.get("feature_actors")
                else []
            ),
            *(
                [
                    f"            {c['features_replaced']:,} of them again: their file changed since (its labels are "
                    "made anew)"
                ]
                if c.get("features_replaced")
                else []
            ),
            *(
                [f"            labels on {c['label_features']} (labels.features; refined in {c['adapter_s']:.1f} s)"]
                if c["label_features"] != c["backbone"]
                else []
            ),
            *foreground_lines(c),
            *pose_lines(c),
            *([f"  nothing new: {c['nothing_new']}"] if c.get("nothing_new") else chain_lines(c)),
            *([sphere_line(s, c, sphere_deg)] if (s := c.get("sphere")) else []),
            f"  coverage  {c['coverage']:.1%} of the {c['pairable']:,} pairable images are the source of a current "
            f"label (python -m queries coverage store={store})",
            f"  store     {store}  (python -m queries labels_per_category store={store})",
        ]
    )


def foreground_lines(c: dict) -> list[str]:
    """The summary's masks: given, estimated, by what."""
    fg = c.get("foreground") or {}
    if not fg:
        return []
    given, estimated = (sum(n[k] for n in fg["by_category"].values()) for k in ("given", "estimated"))
    return [
        f"  masks     {given:,} given, {estimated:,} estimated"
        + (f" (foreground: {fg['method']}; {fg['reason']})" if estimated else "")
    ]


def pose_lines(c: dict) -> list[str]:
    """The summary's pose and pairing: per category given, estimated (by what), none; how
    many images paired by pose and by feature similarity."""
    pose, paired = c.get("pose") or {}, c.get("paired_by") or {}
    total = {k: sum(n[k] for n in pose.get("by_category", {}).values()) for k in ("given", "estimated", "none")}
    if not pose:
        return []
    lines = [
        f"  pose      {total['given']:,} given, {total['estimated']:,} estimated, {total['none']:,} none"
        + (f" (estimator: {pose['estimator']}; {pose['reason']})" if pose["estimator"] != "none" else "")
    ]
    if total["estimated"] or total["none"]:
        lines += [
            f"            {cat}: {n['given']} given, {n['estimated']} estimated, {n['none']} none"
            for cat, n in pose["by_category"].items()
            if n["estimated"] or n["none"]
        ]
    by = {}
    for modes in paired.values():
        for mode, n in modes.items():
            by[mode] = by.get(mode, 0) + n
    if by:
        lines.append("  pairing   " + ", ".join(f"{n:,} images by {mode}" for mode, n in sorted(by.items())))
    return lines


def chain_lines(c: dict) -> list[str]:
    """The summary's tuples, chains and labels: what each stage kept."""
    hops = " -> ".join(f"{c.get(f'after_hop{h}', 0):,}" for h in range(1, c["k"]))
    known = f" ({c['known_pairs']:,} between already labelled images left out)" if c.get("known_pairs") else ""
    return [
        f"  tuples    {c.get('tuples', 0):,} of K={c['k']} ({c['tuples_per_s']:.1f} tuples/s), anchored at "
        f"{c['anchors']:,} new of {c['pairable']:,} pairable images"
        + "".join(f"; {cat}: K={k} (its poses allow no longer)" for cat, k in c.get("tuple_k", {}).items()),
        *[f"            no tuple for '{cat}': {why}" for cat, why in c.get("no_tuples", {}).items()],
        f"  chains    {c.get('seeds', 0):,} foreground seeds -> cycle check per hop: {hops}; features read "
        f"{c.get('feature_reads', 0) / max(1, c['images']):.1f} times per image from the cache (node-local copies "
        f"served the rest of {c.get('feature_loads', 0) / max(1, c['images']):.1f} loads)",
        f"  labels    {c.get('composed', 0):,} composed over all ordered pairs -> {c.get('candidates', 0):,} within "
        f"the pose-gap cap{known} -> {c.get('voted', 0):,} after the vote -> {c.get('after_pair_check', 0):,} after "
        f"the pair check -> {c.get('confident', 0):,} confident -> {c.get('labels', 0):,} "
        f"stored{' after the spherical filter' if c.get('confident') != c.get('labels') else ''} "
        f"({c['labels_per_s']:,.0f} labels/s)",
    ]


def presets(argv: list[str]) -> dict | None:
    return (
        DEMO_PRESET if "data.builtin=demo" in argv and not any(a.startswith("data.manifest=") for a in argv) else None
    )


def parse(argv: list[str]):
    return parse_overrides(default_conf, argv, presets(argv))


def builtin_collection(conf) -> str:
    """The manifest of the built-in collection, rendered on first use."""
    if conf.builtin == "demo":
        return demo.build_demo(conf.demo)
    if conf.builtin == "objects":
        return synthetic.build_collection(conf.objects)
    raise UsageError(f"data.builtin={conf.builtin}: choose objects or demo, or give data.manifest=")


def prepare(conf, stages: Stages | None = None) -> Inputs:
    """Everything that can fail on bad input, before any work: manifest, weights."""
    stages = stages or Stages()
    with stages("collection"):
        manifest_uri = conf.data.manifest or builtin_collection(conf.data)
        df = read_manifest(manifest_uri)
    with stages("backbone"):
        backbone, reason = backbones.build_backbone(conf.backbone)
    image_size = backbone.check_size(conf.backbone.image_size or backbone.image_size)
    backbone_conf = OmegaConf.merge(conf.backbone, {"name": backbone.name, **backbone.sources()})
    fingerprint = backbone.fingerprint(image_size, variant=f"mask={foreground.method_name(conf.foreground)}")
    return Inputs(manifest_uri, df, backbone_conf, reason, image_size, fingerprint)


def resolve(conf) -> Run:
    """The run, once: inputs, store, run id (a new one, or the one to resume), label
    features and mapper, and which images are labelled already; logs it as started."""
    stages = Stages()
    inputs = prepare(conf, stages)
    log.info("backbone %s (%s), features %s", inputs.backbone.name, inputs.backbone_reason, inputs.fingerprint)
    from .adapted import resolve_model  # Ray, with its tasks: not for `--help`

    store = LabelStore(conf.store, conf.catalog)
    model = resolve_model(store, conf.labels.features, inputs.fingerprint)
    cache = FeatureCache(store.feature_cache(conf.features.cache), inputs.fingerprint)
    label_cache = cache.refined(model)
    features = label_cache.fingerprint  # what the run's record names
    run_id = conf.run_id or new_id()
    # `latest` or an id: checked now, before any work; `auto` is resolved after the features
    named = sphere_wanted(conf.labels.sphere) and conf.labels.sphere != "auto"
    sphere = resolve_sphere(store, conf.labels.sphere, features) if named else None
    stored = OmegaConf.masked_copy(conf, [k for k in conf if k != "catalog"])  # its string may hold a password
    digest = config_hash(OmegaConf.masked_copy(stored, [k for k in stored if k not in ("run_id", "ray")]))
    record = store.begin_run(
        {
            "run_id": run_id,
            "manifest": inputs.manifest,
            "backbone": inputs.backbone.name,
            "backbone_fingerprint": inputs.fingerprint,
            "label_features": features,
            "config": OmegaConf.to_yaml(stored),
            "config_hash": digest,
            "label_hash": label_hash(conf),
        }
    )
    if record["config_hash"] != digest:
        raise UsageError(
            f"run_id={run_id} was started with another config (hash {record['config_hash']}, now {digest}; or with "
            "another version of labelgen, whose defaults differ): resume it with the same overrides, or choose a new "
            "run_id"
        )
    if record["label_features"] != features:  # labels.features=promoted, and another model promoted since
        raise UsageError(
            f"run_id={run_id} was started on features {record['label_features']}, "
            f"labels.features={conf.labels.features} now gives {features}: resume it with labels.features=<that "
            "model>, or choose a new run_id"
        )
    if record.get("sphere_id"):  # the mapper a previous attempt filtered with, whatever is latest now
        sphere = resolve_sphere(store, record["sphere_id"], features)
    # what runs committed before this one started labelled alike: the same for every attempt of it
    labelled = store.labelled_images(features, record["label_hash"], record["started"]) if conf.new_only else set()
    return Run(
        **vars(inputs),
        conf=conf,
        store=store,
        run_id=run_id,
        model=model,
        features=cache,
        label_features=label_cache,
        sphere=sphere,
        labelled=labelled & set(inputs.df["image_id"]),
        started=record["started"],
        stages=stages,
    )


def features_stage(run: Run) -> tuple[pd.DataFrame, list[dict], pd.DataFrame]:
    """Backbone features of the images not cached for their files' versions (and the
    adapter's, when relabelling): the good rows, the bad inputs, the per-image results. An
    image whose file changed since its features were cached is no longer labelled: its
    features are computed again, and it is labelled anew."""
    df, stages = run.df, run.stages
    todo = run.features.stale(with_versions(df), run.conf.features.flips)
    run.replaced = run.files.replaced_images(todo["image_id"][todo["cached"].notna()])  # before the cache changes
    run.labelled = run.labelled - run.replaced
    results, feat_s = run.compute_features(todo)
    stages.add("features", feat_s)
    failed = results[results["error"] != ""]
    uris = dict(zip(df["image_id"], df["uri"]))
    bad = [
        {"image_id": i, "uri": uris[i], "stage": "features", "error": e} for i, e in zip(failed.image_id, failed.error)
    ]
    good = df[~df["image_id"].isin(failed["image_id"])]
    estimated = foreground.method_name(run.conf.foreground)
    good = good.assign(mask_source=good["mask_uri"].map(lambda m: "given" if m else estimated))
    if run.model:
        from .adapted import adapt_features

        run.start_ray()
        stages.add("adapter", adapt_features(good["image_id"].tolist(), run.model, run.features))
    return good, bad, results


def sphere_stage(run: Run, good: pd.DataFrame) -> dict | None:
    """The spherical mapper to filter with (labels.sphere), fitted first when auto finds none;
    recorded with the run, so that a resumed attempt filters with the same one."""
    if not sphere_wanted(run.conf.labels.sphere):
        return None
    sphere, trained_s = run.sphere, 0.0
    if sphere is None:  # auto: a mapper registered for these features and the categories that have features
        sphere = resolve_sphere(run.store, "auto", run.label_features.fingerprint, good["category"].unique())
    if sphere is None:
        t0 = time.perf_counter()
        sphere = train_sphere(run, good)
        trained_s = time.perf_counter() - t0
        run.stages.add("sphere", trained_s)
    run.store.update_run(run.run_id, sphere_id=sphere["sphere_id"])
    log.info("spherical filter: mapper %s, %.1f deg", sphere["sphere_id"], run.conf.labels.sphere_deg)
    return {**sphere, "trained_s": trained_s}


def nothing_new(run: Run, tuples: Tuples) -> str | None:
    """Why a run has no tuple to chain because every pairable image is labelled already."""
    if tuples.anchors or not tuples.pairable:
        return None
    return (
        f"all {tuples.pairable:,} pairable images were labelled by committed runs with these label features "
        f"({run.label_features.fingerprint}) and label config; new_only=false labels them again"
    )


def execute(run: Run) -> dict:
    """Features, tuples, mapper, chains and vote, commit (Ray started when first needed);
    categories a previous attempt finished are skipped."""
    from .tasks import remove_attempt_copies, run_labels

    stages = run.stages
    good, bad, results = features_stage(run)
    with stages("poses"):
        good, views = viewpoint.estimate_poses(run, good)
    for warning in [*foreground.warnings(run.df, run.conf.foreground), *views.warnings]:
        log.warning(warning)
    with stages("tuples"):
        tuples = make_tuples(good, run.conf.pairing, run.label_features, run.labelled)
    bad += tuples.left_out
    done = run.files.done_categories()
    if done:
        log.info(
            "resuming run %s: %d of %d categories already done",
            run.run_id,
            len(done & set(tuples.by_category)),
            len(tuples.by_category),
        )
    todo = {c: t for c, t in tuples.by_category.items() if c not in done and len(t)}
    sphere = sphere_stage(run, good) if todo else None
    wall = {"chains_s": 0.0, "vote_s": 0.0}
    if todo:
        run.start_ray()
        wall = run_labels(run, good, todo, sphere)
    elif done:  # an attempt killed after its last vote left its node-local feature copies
        if ray_utils.cluster_address(run.conf.ray):
            run.start_ray()  # to reach every node's
        remove_attempt_copies(run)
    stages.add("chains", wall["chains_s"])
    stages.add("vote", wall["vote_s"])
    if run.replaced:
        run.store.retract_replaced(run.run_id, run.replaced, run.started)
    counts = run_counts(run, tuples, bad, results, wall, sphere, views)
    with stages("commit"):
        run.store.commit(run.run_id, counts, bad)
    return counts


def foreground_record(df: pd.DataFrame, conf) -> dict:
    """Per category how many images came with a mask and how many got one estimated, by what."""
    missing = df["mask_uri"].isna()
    name, reason = foreground.describe(conf)
    return {
        "method": name,
        "reason": reason,
        "by_category": {
            c: {"given": int((~m).sum()), "estimated": int(m.sum())} for c, m in missing.groupby(df["category"])
        },
    }


def run_counts(
    run: Run, tuples: Tuples, bad: list, results: pd.DataFrame, wall: dict, sphere: dict | None, views
) -> dict:
    """The run record's counts: the stages' sums, features, tuples and coverage."""
    totals = {"tuples": 0, "labels": 0, **sum_counts(run.files.category_stats().values())}
    filter_s = totals.pop("sphere_filter_s", 0.0)
    computed, feat_s = len(results) - int((results["error"] != "").sum()), run.stages.seconds.get("features", 0.0)
    sources = run.files.sources() | (run.store.source_images() & set(run.df["image_id"]))
    counts = {
        **totals,
        "images": len(run.df),
        "categories": int(run.df["category"].nunique()),
        "bad_inputs": len(bad),
        "features_computed": computed,
        "features_cached": len(run.df) - len(results),
        "features_replaced": len(run.replaced),  # of a file changed since its features were cached
        "features_s": round(feat_s, 3),
        "features_per_s": computed / feat_s if feat_s else 0.0,
        "features_per_actor_s": len(results) / results["seconds"].sum() if len(results) else 0.0,
        "feature_actors": results["actor"].value_counts().sort_index().to_dict(),  # where -> images
        "backbone": run.fingerprint,
        "backbone_reason": run.backbone_reason,
        "label_features": run.label_features.fingerprint,
        "adapter_s": round(run.stages.seconds.get("adapter", 0.0), 1),
        "k": run.conf.pairing.k,
        "tuple_k": {
            c: t.idx.shape[1] for c, t in tuples.by_category.items() if len(t) and t.idx.shape[1] < run.conf.pairing.k
        },
        "no_tuples": tuples.untupled,  # category -> why it got none, and the fix
        "foreground": foreground_record(run.df, run.conf.foreground),  # per category: masks given, estimated; by what
        "pose": views.record(),  # per category: given, estimated, none; by what
        "paired_by": tuples.paired_by,  # per category: images paired by pose, by similarity
        "pairable": tuples.pairable,
        "anchors": tuples.anchors,
        "already_labelled": len(run.labelled),
        "nothing_new": nothing_new(run, tuples),
        "coverage": len(sources) / tuples.pairable if tuples.pairable else 0.0,
        "chain_s": round(wall["chains_s"], 3),
        "vote_s": round(wall["vote_s"], 3),
        "sphere": sphere
        and {
            "sphere_id": sphere["sphere_id"],
            "trained_s": round(sphere["trained_s"], 1),
            "images": sphere["images"],
            "filter_s": round(filter_s, 1),
        },
        "tuples_per_s": totals.get("tuples", 0) / wall["chains_s"] if wall["chains_s"] else 0.0,
        "labels_per_s": totals.get("labels", 0) / sum(wall.values()) if sum(wall.values()) else 0.0,
        "ray": run.ray or "not started: nothing to compute",
    }
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in counts.items()}


def label(conf) -> int:
    """Run (or resume) the label run `conf` describes, print its summary; 0 when committed."""
    run = resolve(conf)
    if run.store.is_committed(run.run_id):
        print(f"run {run.run_id} is already committed in {run.store}; nothing to do")
        return 0
    log.info("run %s; if it stops, the same command with run_id=%s resumes it", run.run_id, run.run_id)
    try:
        counts = execute(run)
    except BaseException as e:
        try:
            run.store.fail_run(run.run_id, f"{type(e).__name__}: {Fault.found_in(e) or e}")
        except Exception as why:  # e.g. the catalog's disk is the one that is full
            log.warning(
                "run %s: could not record its failure (%s); it stays incomplete", run.run_id, str(why).splitlines()[0]
            )
        raise
    print(summary(run.run_id, run.store, counts, conf.labels.sphere_deg), flush=True)
    print(f"  time      {run.stages.line()}", flush=True)
    if not counts.get("labels") and not counts["nothing_new"]:
        log.warning(
            "run %s stored 0 labels: %s",
            run.run_id,
            "; ".join(f"'{c}': {why}" for c, why in counts["no_tuples"].items())
            or "every chain failed its cycle check or the filters removed every label "
            "(see python -m queries stage_yield)",
        )
    return 0


def relabel_config(store: LabelStore, run_id: str, model_id: str, overrides: list[str]) -> DictConfig:
    """The config that labels committed run `run_id`'s collection again on adapter `model_id`'s
    features: the run's own config (less keys an older labelgen had) on this store (it may
    have moved), a new run id, then `overrides` (labelgen.run's key=value)."""
    run_conf = OmegaConf.create(store.run_record(run_id)["config"])
    run_conf.merge_with(
        {"run_id": None, "store": store.uri, "catalog": store.catalog, "labels": {"features": model_id}}
    )
    return parse_overrides(default_conf, list(overrides), known_keys(OmegaConf.to_container(run_conf), default_conf))
