"""The files a run's Ray tasks write under runs/<run>/ (lake.py shows the layout), and what the
driver reads back from them: which categories are done, their counts, run_stats rows. Tasks
write files under deterministic names (a retried task overwrites its own) and never open
the catalog; the commit registers the files."""

import json
import posixpath

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


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


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


class Staging:
    """LabelStore's staged files: a run's, before (and until) its commit."""

    def _run(self, run_id: str, *parts: str) -> str:
        return join(self.uri, "runs", run_id, *parts)

    def part_uri(self, run_id: str, category: str, part: int = 0, kind: str = "labels") -> str:
        """A vote partition's file of `kind`: labels, or pairs (the image pairs it examined)."""
        return self._run(run_id, kind, f"category={category}", f"part-{part:05d}.parquet")

    def images_uri(self, run_id: str, category: str) -> str:
        return self._run(run_id, "images", f"category={category}.parquet")

    def _staged(self, run_id: str, *kind: str) -> list[str]:
        """URIs of the files of one kind (labels, images, candidates/...) that the run's tasks wrote."""
        _, root = filesystem(self.uri)
        paths = [p for p in list_files(self._run(run_id, *kind)) if p.endswith(".parquet")]
        return [join(self.uri, posixpath.relpath(p, root)) for p in paths]

    def staged_categories(self, run_id: str) -> set[str]:
        """Categories a previous attempt of this run finished: its images file and every label
        file (vote partition) it names."""
        written = {}
        for uri in self._staged(run_id, "labels"):
            category = _category(uri)
            written[category] = written.get(category, 0) + 1
        return {c for c, (_, parts) in self._images_meta(run_id).items() if written.get(c, 0) == parts}

    def staged_sources(self, run_id: str) -> set[str]:
        """Source images of the labels the run's tasks wrote (from its pair files)."""
        out = set()
        for f in self._staged(run_id, "pairs"):
            pairs = pq.read_table(pa.BufferReader(read_bytes(f)), columns=["src_image_id", "labels"])
            out.update(pairs.filter(pc.greater(pairs["labels"], 0))["src_image_id"].unique().to_pylist())
        return out

    def replaced_images(self, run_id: str, found) -> set[str]:
        """`found` (images whose file changed since their features were cached) and those an
        earlier attempt of the run found, which it cached anew: every attempt labels the same."""
        uri, found = self._run(run_id, "replaced.parquet"), set(found)
        known = set(pq.read_table(pa.BufferReader(read_bytes(uri)))["image_id"].to_pylist()) if exists(uri) else set()
        if not found <= known:
            write_bytes(uri, table_bytes(pa.table({"image_id": sorted(known | found)})))
        return known | found

    def write_retractions(self, run_id: str, images: set[str], before: str) -> int:
        """Supersede the current labels made on the old features of replaced `images`: each
        current pair with one of them, of a run committed before `before` (this run's start),
        that this run did not examine again, as a pair of this run with 0 labels."""
        replaced = pa.table({"image_id": pa.array(sorted(images), pa.string())})

        def current(con):
            con.register("replaced", replaced)
            return con.execute(
                "SELECT c.category, c.src_image_id, c.tgt_image_id FROM lake.current_pairs c JOIN lake.runs r USING "
                "(run_id) WHERE c.labels > 0 AND r.finished < ?::TIMESTAMP AND (c.src_image_id IN (FROM replaced) "
                "OR c.tgt_image_id IN (FROM replaced))",
                [before],
            ).fetch_arrow_table()

        stale, keys = (
            self.session("labels of replaced images in", current),
            ["category", "src_image_id", "tgt_image_id"],
        )
        examined = [
            pq.read_table(pa.BufferReader(read_bytes(f)), columns=keys)
            for f in self._staged(run_id, "pairs")
            if not f.endswith(RETRACTED)
        ]
        if examined:
            stale = stale.join(pa.concat_tables(examined), keys, join_type="left anti")
        for category in pc.unique(stale["category"]).to_pylist():
            rows = stale.filter(pc.equal(stale["category"], category))
            pairs = pair_table(run_id, category, rows, rows.slice(0, 0))
            write_bytes(self._run(run_id, "pairs", f"category={category}", RETRACTED), table_bytes(pairs))
        return stale.num_rows

    def write_part(
        self, run_id: str, category: str, part: int, labels: pa.Table, stats: dict, examined: pa.Table | None = None
    ):
        """One vote partition's labels, with its counts in the file's metadata, and the image
        pairs it examined (those with candidates in `examined`, default: in `labels`), first:
        the label file marks the partition done. Called from Ray tasks: files only, no catalog."""
        pairs = pair_table(run_id, category, labels if examined is None else examined, labels)
        write_bytes(self.part_uri(run_id, category, part, "pairs"), table_bytes(pairs))
        labels = labels.cast(LABEL_SCHEMA).replace_schema_metadata({STATS_KEY: json.dumps(stats).encode()})
        write_bytes(self.part_uri(run_id, category, part), table_bytes(labels))

    def write_images(self, run_id: str, category: str, images: pa.Table, stats: dict, parts: int):
        """The category's images, with the chains' counts and its number of vote partitions."""
        images = images.replace_schema_metadata({STATS_KEY: json.dumps(stats).encode(), PARTS_KEY: str(parts).encode()})
        write_bytes(self.images_uri(run_id, category), table_bytes(images))

    def write_category(self, run_id: str, category: str, labels: pa.Table, images: pa.Table, stats: dict):
        """A category's labels in one partition (a copied run, tests)."""
        self.write_part(run_id, category, 0, labels, {})
        self.write_images(run_id, category, images, stats, parts=1)

    def _images_meta(self, run_id: str) -> dict[str, tuple[dict, int]]:
        """category -> (the chains' counts, vote partitions) of the run's images files."""
        out = {}
        for uri in self._staged(run_id, "images"):
            meta = pq.read_schema(pa.BufferReader(read_bytes(uri))).metadata or {}
            out[posixpath.basename(uri)[len("category=") : -len(".parquet")]] = (
                json.loads(meta.get(STATS_KEY, b"{}")),
                int(meta.get(PARTS_KEY, b"1")),
            )
        return out

    def category_stats(self, run_id: str, label_meta: dict[str, dict] | None = None) -> dict[str, dict]:
        """Per-category counts of the categories staged so far: the chains' and the sum of its
        vote partitions' (`label_meta`: label file -> its metadata, when already read)."""
        if label_meta is None:
            label_meta = {
                uri: pq.read_schema(pa.BufferReader(read_bytes(uri))).metadata or {}
                for uri in self._staged(run_id, "labels")
            }
        parts = {}
        for uri, meta in label_meta.items():
            parts.setdefault(_category(uri), []).append(json.loads(meta.get(STATS_KEY, b"{}")))
        chains = {c: stats for c, (stats, _) in self._images_meta(run_id).items()}
        return {c: sum_counts([chains.get(c, {}), *parts.get(c, [])]) for c in chains.keys() | parts.keys()}

    def _label_stats(self, run_id: str, files: list[str]) -> pa.Table:
        """run_stats rows of the run's staged label files, computed before the commit so that its
        transaction stays short. Each file is read once (rows, and the vote's counts in its
        metadata) and reduced to per-category sums at once, so the driver holds one file at a
        time however large the run; an image pair lies in one vote partition, one file, so
        its distinct pairs add up across files."""
        con, sums, meta = duckdb.connect(), [], {}
        try:
            for f in files or [None]:
                table = (
                    LABEL_SCHEMA.empty_table()
                    if f is None
                    else pq.read_table(pa.BufferReader(read_bytes(f)), columns=STAT_COLUMNS)
                )
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
                [run_id],
            ).fetch_arrow_table()
        finally:
            con.close()
        stats = self.category_stats(run_id, {f: m for f, m in meta.items() if f is not None})
        counts = [json.dumps(stats.get(c, {})) for c in out["category"].to_pylist()]
        return out.append_column("counts", pa.array(counts, pa.string()))
