"""The Ray tasks of a label run, map then reduce: candidate labels per chunk of tuples
(`candidate_task`), written per vote partition, then one vote per partition (`vote_task`),
which starts once its category's chunks are in. Tasks share no disk and never open the
catalog: they write their own files under the store (labelgen.store), and the driver
commits them. `run_labels` schedules them and shows their progress."""

import time

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray
from omegaconf import OmegaConf

from . import labels, pairing
from .console import Progress
from .features import cache_uri, load_features
from .models import SphereMapper, load_checkpoint
from .ray_utils import wait_each
from .sphere import map_image
from .store import IMAGE_SCHEMA, LabelStore, images_table, sum_counts
from .tuples import CategoryTuples


def chunk_candidates(run_id, category, tuples, cache_root, fingerprint, conf, rotations=None, device="cpu"):
    """Chain one chunk of tuples into candidate labels, reading each of its images once;
    returns the labels, the counts per stage and the features read."""
    ids = sorted({i for t in tuples for i in t})
    feats = {i: load_features(cache_uri(cache_root, fingerprint, i)) for i in ids}
    table, stats = labels.candidates(run_id, category, tuples, feats, conf, rotations, device)
    return table, stats, feats


def drop_known_pairs(table: pa.Table, labelled: set[str]) -> pa.Table:
    """Candidates between two images already labelled (by an earlier run with the same label
    features and config): their pair keeps its labels, so they are not made again."""
    if not labelled or not table.num_rows:
        return table
    known = pa.array(sorted(labelled), pa.string())
    old = pc.and_(pc.is_in(table["src_image_id"], known), pc.is_in(table["tgt_image_id"], known))
    return table.filter(pc.invert(old))


@ray.remote(num_cpus=1)
def candidate_task(
    run_id, category, chunk, tuples, cache_root, fingerprint, conf, rotations, parts, store_uri, labelled
):
    """Map: one chunk's candidate labels (none between two already labelled images), written
    per vote partition; returns the counts per stage and each image's size and foreground."""
    table, stats, feats = chunk_candidates(run_id, category, tuples, cache_root, fingerprint, conf, rotations)
    table = drop_known_pairs(table, labelled)
    stats["known_pairs"], stats["candidates"] = stats["candidates"] - table.num_rows, table.num_rows
    store = LabelStore(store_uri)
    for part, rows in labels.by_partition(table, parts):
        store.write_candidates(run_id, category, part, chunk, rows)
    return stats, {i: (f.width, f.height, int(f.fg.sum())) for i, f in feats.items()}


@ray.remote(num_cpus=1)
def vote_task(run_id, category, part, conf, store_uri, sphere, *chunks):
    """Reduce one vote partition of a category (it starts once the category's candidate tasks,
    `chunks`, are done, with their images' foreground counts): vote, keep the labels whose
    pair agrees and the most confident of them, filter on the sphere if asked; write them
    with the counts and the pairs examined."""
    store = LabelStore(store_uri)
    examined = labels.vote([store.candidates(run_id, category, part)], conf)
    stats = {"voted": examined.num_rows}
    table = labels.pair_check(examined, conf.pair_radius)
    stats["after_pair_check"] = table.num_rows
    n_fg = {i: size[2] for _, sizes in chunks for i, size in sizes.items()}
    pairs = examined.group_by(["src_image_id", "tgt_image_id"]).aggregate([])
    table = labels.confidence_filter(table, conf, n_fg, pairs)
    stats["confident"] = table.num_rows
    if sphere is not None and table.num_rows:
        t0 = time.perf_counter()
        mapper, (cache_root, fingerprint) = load_checkpoint(SphereMapper, sphere["checkpoint"]), sphere["cache"]
        ids = sorted(set(table.column("src_image_id").to_pylist()) | set(table.column("tgt_image_id").to_pylist()))
        fgs = {i: labels.Foreground.of(load_features(cache_uri(cache_root, fingerprint, i))) for i in ids}
        points = {i: map_image(mapper, fg.feats) for i, fg in fgs.items()}
        table = labels.sphere_filter(table, fgs, points, conf.sphere_deg)
        stats["sphere_filter_s"] = time.perf_counter() - t0
    stats["labels"] = table.num_rows
    store.write_part(run_id, category, part, table, stats, examined)
    return stats


IMAGE_COLUMNS = [n for n in IMAGE_SCHEMA.names if n not in ("run_id", "width", "height", "n_fg")]


def run_labels(run, df: pd.DataFrame, tuples_by_cat: dict[str, CategoryTuples], sphere=None) -> dict:
    """Candidate tasks per chunk of tuples, then the vote tasks of each category's partitions;
    a category's images file (with the chains' counts) is written once its chunks are in.
    Returns the seconds until the last chain and until the last vote."""
    conf = OmegaConf.create(OmegaConf.to_container(run.conf.labels))
    step, store, run_id = conf.tuples_per_task, run.store, run.run_id
    category_of, left, parts, rows, votes = {}, {}, {}, {}, []
    for category, tuples in tuples_by_cat.items():
        parts[category] = labels.vote_parts(len(tuples), conf)
        rows[category] = df[df["category"] == category]
        rotations = ray.put(pairing.view_rotations(rows[category]))
        labelled = ray.put(run.labelled & set(tuples.ids))
        refs = [
            candidate_task.remote(
                run_id,
                category,
                n,
                tuples[s : s + step],
                run.cache_root,
                run.label_features,
                conf,
                rotations,
                parts[category],
                store.uri,
                labelled,
            )
            for n, s in enumerate(range(0, len(tuples), step))
        ]
        votes += [vote_task.remote(run_id, category, p, conf, store.uri, sphere, *refs) for p in range(parts[category])]
        category_of.update(dict.fromkeys(refs, category))
        left[category] = len(refs)
    t0, done_chunks = time.perf_counter(), {c: [] for c in tuples_by_cat}
    with Progress(sum(len(t) for t in tuples_by_cat.values()), "chains", "tuples") as bar:
        for ref, chunk in wait_each(category_of):
            category = category_of[ref]
            done_chunks[category].append(chunk)
            bar.update(chunk[0]["tuples"])
            if len(done_chunks[category]) == left[category]:
                write_images(run, category, rows.pop(category), done_chunks.pop(category), parts[category])
    chains_s = time.perf_counter() - t0
    with Progress(len(votes), "vote", "partitions") as bar:
        for _ in wait_each(votes):
            bar.update(1)
    return {"chains_s": chains_s, "vote_s": time.perf_counter() - t0 - chains_s}


def write_images(run, category: str, rows: pd.DataFrame, chunks, parts: int):
    """The category's images (sizes and foreground as its chunks saw them) and the chains' counts."""
    seen = {i: size for _, chunk_seen in chunks for i, size in chunk_seen.items()}
    sizes = pd.DataFrame.from_dict(seen, orient="index", columns=["width", "height", "n_fg"])
    images = rows[[c for c in IMAGE_COLUMNS if c in rows.columns]].join(sizes, on="image_id").assign(run_id=run.run_id)
    run.store.write_images(run.run_id, category, images_table(images), sum_counts(stats for stats, _ in chunks), parts)
