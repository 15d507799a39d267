"""A run's files under runs/<run>/ (lake.py shows the layout): what its Ray tasks write, and
what the driver reads back from them (which categories are done, their counts, run_stats
rows) before the commit registers them. `RunFiles` holds a store's URI and a run id and
nothing else: no catalog, so a task that gets one can write its own files and cannot touch
the catalog. Tasks write under deterministic names, so a retried task overwrites its own."""

import json
import posixpath
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..io import exists, filesystem, join, list_files, read_bytes, write_bytes
from .schema import LABEL_SCHEMA, pair_table

STATS_KEY = b"labelgen.stats"  # metadata of a label file (its vote's counts) and an images file (the chains' counts)
PARTS_KEY = b"labelgen.parts"  # an images file's metadata: how many label files (vote partitions) its category has
MEAN_COLUMNS = ("cycle_error", "similarity", "support")  # run_stats has their means per category
STAT_COLUMNS = ["category", "src_image_id", "tgt_image_id", "hops", *MEAN_COLUMNS]  # what a label file is read for
SUMS = ", ".join(f"sum({c}) AS sum_{c}, count({c}) AS n_{c}" for c in MEAN_COLUMNS)
RETRACTED = "retracted.parquet"  # a run's pairs file (per category) of pairs it supersedes without examining them
PAIR_KEYS = ["category", "src_image_id", "tgt_image_id"]


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(pa.BufferReader(read_bytes(uri)), columns=columns)


def sum_counts(counts) -> dict:
    """Key by key sums of count dicts (a category's chunks and partitions, a run's categories)."""
    out = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _category(uri: str) -> str:
    """The category of a run's label file (.../category=<c>/part-<p>.parquet)."""
    return posixpath.basename(posixpath.dirname(uri))[len("category=") :]


@dataclass(frozen=True)
class RunFiles:
    """The files of run `run_id` in the store at `uri`, before (and after) its commit."""

    uri: str
    run_id: str

    def path(self, *parts: str) -> str:
        return join(self.uri, "runs", self.run_id, *parts)

    def part_uri(self, category: str, part: int = 0, kind: str = "labels") -> str:
        """A vote partition's file of `kind`: labels, or pairs (the image pairs it examined)."""
        return self.path(kind, f"category={category}", f"part-{part:05d}.parquet")

    def images_uri(self, category: str) -> str:
        return self.path("images", f"category={category}.parquet")

    def staged(self, kind: str) -> list[str]:
        """URIs of the files of one kind (labels, pairs, images) that the run's tasks wrote."""
        _, root = filesystem(self.uri)
        paths = [p for p in list_files(self.path(kind)) if p.endswith(".parquet")]
        return [join(self.uri, posixpath.relpath(p, root)) for p in paths]

    def write_part(self, category: str, part: int, labels: pa.Table, stats: dict, examined: pa.Table | None = None):
        """One vote partition's labels, with its counts in the file's metadata, and the image
        pairs it examined (those with candidates in `examined`, default: in `labels`), first:
        the label file marks the partition done."""
        pairs = pair_table(self.run_id, category, labels if examined is None else examined, labels)
        write_bytes(self.part_uri(category, part, "pairs"), table_bytes(pairs))
        labels = labels.cast(LABEL_SCHEMA).replace_schema_metadata({STATS_KEY: json.dumps(stats).encode()})
        write_bytes(self.part_uri(category, part), table_bytes(labels))

    def write_images(self, category: str, images: pa.Table, stats: dict, parts: int):
        """The category's images, with the chains' counts and its number of vote partitions."""
        images = images.replace_schema_metadata({STATS_KEY: json.dumps(stats).encode(), PARTS_KEY: str(parts).encode()})
        write_bytes(self.images_uri(category), table_bytes(images))

    def write_category(self, category: str, labels: pa.Table, images: pa.Table, stats: dict):
        """A category's labels in one partition (a copied run, tests)."""
        self.write_part(category, 0, labels, {})
        self.write_images(category, images, stats, parts=1)

    def done_categories(self) -> set[str]:
        """Categories a previous attempt of this run finished: its images file and every label
        file (vote partition) it names."""
        written = {}
        for uri in self.staged("labels"):
            category = _category(uri)
            written[category] = written.get(category, 0) + 1
        return {c for c, (_, parts) in self._images_meta().items() if written.get(c, 0) == parts}

    def sources(self) -> set[str]:
        """Source images of the labels the run's tasks wrote (from its pair files)."""
        out = set()
        for f in self.staged("pairs"):
            pairs = read_table(f, ["src_image_id", "labels"])
            out.update(pairs.filter(pc.greater(pairs["labels"], 0))["src_image_id"].unique().to_pylist())
        return out

    def replaced_images(self, found) -> set[str]:
        """`found` (images whose file changed since their features were cached) and those an
        earlier attempt of the run found, which it cached anew: every attempt labels the same."""
        uri, found = self.path("replaced.parquet"), set(found)
        known = set(read_table(uri)["image_id"].to_pylist()) if exists(uri) else set()
        if not found <= known:
            write_bytes(uri, table_bytes(pa.table({"image_id": sorted(known | found)})))
        return known | found

    def retract(self, current: pa.Table) -> int:
        """Supersede `current` pairs (category, src_image_id, tgt_image_id) that this run did
        not examine again: each as a pair of this run with 0 labels. How many it retracted."""
        examined = [read_table(f, PAIR_KEYS) for f in self.staged("pairs") if not f.endswith(RETRACTED)]
        stale = current.join(pa.concat_tables(examined), PAIR_KEYS, join_type="left anti") if examined else current
        for category in pc.unique(stale["category"]).to_pylist():
            rows = stale.filter(pc.equal(stale["category"], category))
            pairs = pair_table(self.run_id, category, rows, rows.slice(0, 0))
            write_bytes(self.path("pairs", f"category={category}", RETRACTED), table_bytes(pairs))
        return stale.num_rows

    def _images_meta(self) -> dict[str, tuple[dict, int]]:
        """category -> (the chains' counts, vote partitions) of the run's images files."""
        out = {}
        for uri in self.staged("images"):
            meta = pq.read_schema(pa.BufferReader(read_bytes(uri))).metadata or {}
            out[posixpath.basename(uri)[len("category=") : -len(".parquet")]] = (
                json.loads(meta.get(STATS_KEY, b"{}")),
                int(meta.get(PARTS_KEY, b"1")),
            )
        return out

    def category_stats(self, label_meta: dict[str, dict] | None = None) -> dict[str, dict]:
        """Per-category counts of the categories staged so far: the chains' and the sum of its
        vote partitions' (`label_meta`: label file -> its metadata, when already read)."""
        if label_meta is None:
            label_meta = {
                uri: pq.read_schema(pa.BufferReader(read_bytes(uri))).metadata or {} for uri in self.staged("labels")
            }
        parts = {}
        for uri, meta in label_meta.items():
            parts.setdefault(_category(uri), []).append(json.loads(meta.get(STATS_KEY, b"{}")))
        chains = {c: stats for c, (stats, _) in self._images_meta().items()}
        return {c: sum_counts([chains.get(c, {}), *parts.get(c, [])]) for c in chains.keys() | parts.keys()}

    def run_stats(self, label_files: list[str]) -> pa.Table:
        """run_stats rows of the run's label files, computed before the commit so that its
        transaction stays short. Each file is read once (rows, and the vote's counts in its
        metadata) and reduced to per-category sums at once, so the driver holds one file at a
        time however large the run; an image pair lies in one vote partition, one file, so
        its distinct pairs add up across files."""
        con, sums, meta = duckdb.connect(), [], {}
        try:
            for f in label_files or [None]:
                table = LABEL_SCHEMA.empty_table() if f is None else read_table(f, STAT_COLUMNS)
                meta[f] = table.schema.metadata or {}
                con.register("staged", table)
                sums.append(
                    con.execute(
                        f"SELECT category, count(*) AS labels, count(DISTINCT (src_image_id, tgt_image_id)) "
                        f"AS image_pairs, max(hops) AS max_hops, {SUMS} FROM staged GROUP BY category"
                    ).fetch_arrow_table()
                )
                con.unregister("staged")
            con.register("sums", pa.concat_tables(sums))
            means = ", ".join(f"sum(sum_{c}) / sum(n_{c}) AS mean_{c}" for c in MEAN_COLUMNS)
            out = con.execute(
                f"""
                SELECT ? AS run_id, category, sum(labels)::BIGINT AS labels, sum(image_pairs)::BIGINT AS image_pairs,
                       {means}, max(max_hops)::INTEGER AS max_hops
                FROM sums GROUP BY category ORDER BY category""",
                [self.run_id],
            ).fetch_arrow_table()
        finally:
            con.close()
        stats = self.category_stats({f: m for f, m in meta.items() if f is not None})
        counts = [json.dumps(stats.get(c, {})) for c in out["category"].to_pylist()]
        return out.append_column("counts", pa.array(counts, pa.string()))
