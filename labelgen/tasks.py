"""The label stage on Ray Data: chunks of tuples -> chains -> Ray's hash shuffle -> vote.

A chain task turns one chunk of tuples into candidate labels, each keyed by its vote
partition (a stable hash of its source image); Ray Data's hash shuffle brings every
chunk's candidates of a (category, partition) together, and one vote per partition keeps
the labels the tuples agree on and writes them. Candidates travel through Ray's object
store (spilled to the node's disk when it fills), never through files of the store; the
vote gets its images' foreground counts as a column. The chain tasks report their counts
and image sizes to a `ChainTally` actor (keyed by chunk, so a retried task counts once);
the driver holds O(categories + partitions) and writes each category's images file once
all its partitions are voted. Tasks share no disk and never open the catalog: the vote
writes its own files under the store (labelgen.store), and the driver commits them.

Each image's features are read by every chunk that holds it (60-90 chunks: tuples are
random walks over the category), so the tasks read them through a node-local copy
(`node_copy.NodeCopy`): from the store once per node.
"""

import threading
import time
import uuid
from functools import lru_cache, partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray
from omegaconf import OmegaConf

from . import labels, pairing, vote
from .console import Progress, quiet_ray_data
from .node_copy import NodeCopy, remove_copies
from .ray_utils import on_every_node
from .store.files import sum_counts
from .store.schema import IMAGE_SCHEMA, LABEL_SCHEMA, images_table
from .tuples import CategoryTuples

# a candidate row on its way to the vote: the label columns, its vote partition, its source's foreground patches
EXCHANGE_SCHEMA = pa.schema(
    [*LABEL_SCHEMA, pa.field("vote", pa.int32()), pa.field("part", pa.int32()), pa.field("src_n_fg", pa.int32())]
)  # vote: the shuffle's key, the partition's number over the run (an int hashes and sorts fast)
IMAGE_COLUMNS = [n for n in IMAGE_SCHEMA.names if n not in ("run_id", "width", "height", "n_fg")]


def chunk_candidates(run_id, category, tuples, load, conf, rotations=None, device="cpu"):
    """Chain one chunk of tuples into candidate labels, loading each of its images once
    (`load`: image id -> ImageFeatures); returns the labels, the counts per stage and the features."""
    feats = {i: load(i) for i in sorted({i for t in tuples for i in t})}
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


@ray.remote(num_cpus=0)
class ChainTally:
    """What the chain tasks report: counts per chunk, the sizes and foreground of the images
    they saw, the vote partitions they sent candidates to."""

    def __init__(self):
        self.stats, self.sizes, self.parts = {}, {}, {}

    def add(self, category: str, chunk: int, stats: dict, sizes: dict, parts: list[int]):
        self.stats[category, chunk] = stats
        self.sizes.setdefault(category, {}).update(sizes)
        self.parts.setdefault(category, set()).update(parts)

    def tuples(self) -> int:
        return sum(s["tuples"] for s in self.stats.values())

    def voted_parts(self) -> dict[str, set[int]]:
        """category -> the partitions that got candidates (each gets a vote)."""
        return self.parts

    def category(self, category: str) -> tuple[dict, dict]:
        """A category's summed chain counts and its images' (width, height, foreground patches)."""
        return sum_counts(s for (c, _), s in self.stats.items() if c == category), self.sizes.get(category, {})


@lru_cache(maxsize=4)
def shared(ref) -> dict:
    """A category's data for its chain tasks, fetched once per worker process."""
    return ray.get(ref)


def chain_chunk(batch: dict, run_id, categories, first_chunk, data, conf, features, copy_key, tally) -> pa.Table:
    """Map: one chunk's candidate labels (none between two already labelled images), keyed by
    their vote partition; its counts, image sizes and partitions go to the tally."""
    n = int(batch["id"][0])
    c = int(np.searchsorted(first_chunk, n, side="right")) - 1
    category, chunk, d = categories[c], n - int(first_chunk[c]), shared(data[categories[c]])
    step = conf.tuples_per_task
    tuples = [tuple(t) for t in d["ids"][d["idx"][chunk * step : (chunk + 1) * step]]]
    reader = NodeCopy(copy_key)
    table, stats, feats = chunk_candidates(
        run_id, category, tuples, partial(features.load, read=reader.read), conf, d["rotations"]
    )
    table = drop_known_pairs(table, d["labelled"])
    stats["known_pairs"], stats["candidates"] = stats["candidates"] - table.num_rows, table.num_rows
    stats["feature_loads"], stats["feature_reads"] = len(feats), reader.reads
    n_fg = {i: int(f.fg.sum()) for i, f in feats.items()}
    part = vote.partition_of(table["src_image_id"], d["parts"])
    src = pc.dictionary_encode(table["src_image_id"]).combine_chunks()  # per source image, not per row
    src_n_fg = np.array([n_fg[i] for i in src.dictionary.to_pylist()], dtype=np.int32)
    src_n_fg = src_n_fg[src.indices.to_numpy(zero_copy_only=False)]
    table = (
        table.append_column("vote", pa.array(part + d["first_part"], pa.int32()))
        .append_column("part", pa.array(part, pa.int32()))
        .append_column("src_n_fg", pa.array(src_n_fg))
    )
    table, sizes = table.cast(EXCHANGE_SCHEMA), {i: (f.width, f.height, n_fg[i]) for i, f in feats.items()}
    stats["exchanged_bytes"] = table.nbytes
    ray.get(tally.add.remote(category, chunk, stats, sizes, np.unique(part).tolist()))
    return table


def label_dataset(
    run, df: pd.DataFrame, tuples_by_cat: dict[str, CategoryTuples], parts: dict, tally, sphere, copy_key
):
    """The Ray Data pipeline: chunk numbers -> chain tasks -> hash shuffle by (category,
    partition) -> one vote per partition; yields a row per partition voted."""
    conf = OmegaConf.create(OmegaConf.to_container(run.conf.labels))
    categories = list(tuples_by_cat)
    chunks = [-(-len(tuples_by_cat[c]) // conf.tuples_per_task) for c in categories]
    first_chunk = np.concatenate([[0], np.cumsum(chunks)[:-1]]).astype(np.int64)
    first_part, data = dict(zip(categories, np.cumsum([0, *(parts[c] for c in categories)]).tolist())), {}
    for c in categories:
        t, rows = tuples_by_cat[c], df[df["category"] == c]
        data[c] = ray.put(
            {
                "ids": t.ids,
                "idx": t.idx,
                "rotations": pairing.view_rotations(rows),
                "labelled": run.labelled & set(t.ids),
                "parts": parts[c],
                "first_part": first_part[c],
            }
        )
    # Ray Data keeps half of the CPUs for the operators downstream of the chains by default; the
    # shuffle's map tasks need them only at the end, so the chains take every CPU (x2 on 2 cores)
    context = ray.data.DataContext.get_current()
    context.op_resource_reservation_enabled = False
    chained = ray.data.range(sum(chunks), override_num_blocks=sum(chunks)).map_batches(
        chain_chunk,
        batch_size=None,  # a block is one chunk number: Ray Data fuses the read into the chain task
        num_cpus=1,
        fn_kwargs={
            "run_id": run.run_id,
            "categories": categories,
            "first_chunk": first_chunk,
            "data": data,
            "conf": conf,
            "features": run.label_features,
            "copy_key": copy_key,
            "tally": tally,
        },
    )
    return chained.groupby("vote", num_partitions=sum(parts.values())).map_groups(
        vote.vote_group,
        batch_format="pyarrow",
        num_cpus=1,
        fn_kwargs={
            "files": run.files,
            "conf": conf,
            "sphere": sphere and {"checkpoint": sphere["checkpoint"], "features": run.label_features},
            "copy_key": copy_key,
        },
    )


class ChainProgress:
    """The chains' progress bar, moved by polling the tally from a thread (the pipeline's
    first output comes only after every chain task is done); notes when the last one ended."""

    def __init__(self, tally, total: int, every_s: float = 0.5):
        self.tally, self.total, self.every_s = tally, total, every_s
        self.bar, self.done_at = Progress(total, "chains", "tuples"), None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self):
        while not self.stop.wait(self.every_s) and self.done_at is None:
            self.seen(ray.get(self.tally.tuples.remote()))

    def seen(self, done: int):
        self.bar.update(done - self.bar.done)
        if done >= self.total and self.done_at is None:
            self.done_at = time.perf_counter()
            self.bar.close()

    def finish(self) -> float:
        """Stop polling (every chain task is done); when the last one was seen to end."""
        self.stop.set()
        self.thread.join()
        if self.done_at is None:
            self.seen(ray.get(self.tally.tuples.remote()))
        return self.done_at


def remove_attempt_copies(run) -> None:
    """Every node's copies of features made by this run's attempts (`NodeCopy`), a killed one's
    included; without Ray (no cluster to join, so no instance to start for it) this machine's."""
    if ray.is_initialized():
        on_every_node(remove_copies, f"{run.run_id}-")
    else:
        remove_copies(f"{run.run_id}-")


def run_labels(run, df: pd.DataFrame, tuples_by_cat: dict[str, CategoryTuples], sphere=None) -> dict:
    """Chains and vote of every category on one Ray Data pipeline; a category's images file
    (with the chains' counts and its number of partitions) is written once its partitions are
    voted, which marks it done for a resumed attempt. Returns the seconds until the last chain
    and until the last vote."""
    quiet_ray_data()
    parts = {c: vote.vote_parts(len(t), run.conf.labels) for c, t in tuples_by_cat.items()}
    copy_key, tally = f"{run.run_id}-{uuid.uuid4().hex[:8]}", ChainTally.remote()
    remove_attempt_copies(run)  # of an earlier attempt, whose features may have changed since
    t0, voted, expected = time.perf_counter(), {c: set() for c in tuples_by_cat}, None
    chains = ChainProgress(tally, sum(len(t) for t in tuples_by_cat.values()))
    try:
        rows = label_dataset(run, df, tuples_by_cat, parts, tally, sphere, copy_key).iter_rows()
        for row in rows:
            if expected is None:
                expected, chains_s = expect(run, df, list(voted), tally, chains, t0)
                bar = Progress(sum(map(len, expected.values())), "vote", "partitions")
            voted[row["category"]].add(row["part"])
            bar.update(1)
            if voted[row["category"]] == expected[row["category"]]:
                write_images(run, df, row["category"], tally, len(expected[row["category"]]))
        if expected is None:  # no candidates at all: no vote ran
            expected, chains_s = expect(run, df, list(voted), tally, chains, t0)
        else:
            bar.close()
    finally:
        chains.finish()
        remove_attempt_copies(run)
        ray.kill(tally)
    return {"chains_s": chains_s, "vote_s": time.perf_counter() - t0 - chains_s}


def expect(run, df: pd.DataFrame, categories: list, tally, chains: ChainProgress, t0: float) -> tuple[dict, float]:
    """Once the chains are done: the partitions each category will vote (those that got
    candidates), the chains' seconds; a category with none is done already."""
    chains_s, got = chains.finish() - t0, ray.get(tally.voted_parts.remote())
    expected = {c: got.get(c, set()) for c in categories}
    for category, wanted in expected.items():
        if not wanted:
            write_images(run, df, category, tally, 0)
    return expected, chains_s


def write_images(run, df: pd.DataFrame, category: str, tally, parts: int):
    """The category's images (sizes and foreground as its chunks saw them), the chains' counts
    and its number of vote partitions."""
    stats, seen = ray.get(tally.category.remote(category))
    sizes = pd.DataFrame.from_dict(seen, orient="index", columns=["width", "height", "n_fg"])
    rows = df[df["category"] == category]
    images = rows[[c for c in IMAGE_COLUMNS if c in rows.columns]].join(sizes, on="image_id").assign(run_id=run.run_id)
    run.files.write_images(category, images_table(images), stats, parts)
