"""Which labels an export writes: the current labels of one snapshot, filtered by run,
category and split, at most `max_per_pair` per ordered image pair, in one fixed order.

Every query here joins each label to its own run's rows of `images` (the sizes and files
its coordinates refer to) and runs on one read-only connection pinned to the snapshot, so
an export of a snapshot reads the same rows however many runs commit after it.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from ..store import LABEL_SCHEMA, LabelStore

IMAGE_SPLIT = "coalesce({a}.split, 'train')"  # an image without a split counts as train, as the trainer has it
JOINED = """labels l
    JOIN images s ON s.run_id = l.run_id AND s.category = l.category AND s.image_id = l.src_image_id
    JOIN images t ON t.run_id = l.run_id AND t.category = l.category AND t.image_id = l.tgt_image_id"""
# The order labels keep in a pair, and the ones `max_per_pair` keeps: most confident first,
# then by position (ties and unscored labels in a fixed order).
RANK = "ORDER BY l.confidence DESC NULLS LAST, l.src_x, l.src_y, l.tgt_x, l.tgt_y"
PAIR = ["category", "src_image_id", "tgt_image_id"]
IMAGE_COLUMNS = ["uri", "mask_uri", "width", "height"]
POINT = ["src_x", "src_y", "tgt_x", "tgt_y"]
LABELS = pa.schema([*LABEL_SCHEMA, pa.field("split", pa.string())])  # the rows the parquet format writes


@dataclass
class Filters:
    runs: list[str]  # empty: every run
    categories: list[str]  # the collection's names; empty: every one
    splits: list[str]  # manifest splits of both images; empty: every pair
    max_per_pair: int  # 0: every label
    names: dict[str, str]  # collection's category -> the export's name (the others keep theirs)

    def record(self) -> dict:
        """The filters by their keys' names, for an export's records."""
        return {
            "runs": self.runs,
            "categories": self.categories,
            "split": self.splits,
            "max_per_pair": self.max_per_pair,
            "category_map": self.names,
        }


class Selection:
    """The store at one snapshot with the filters applied. `categories` maps each of the
    export's category names to the collection's categories it gathers."""

    def __init__(self, store: LabelStore, at: int | None, filters: Filters):
        self.store, self.filters = store, filters
        self.snapshot = pinned_snapshot(store, at)
        self.con = store.connect(snapshot=self.snapshot)
        known = self._column("SELECT DISTINCT category FROM images ORDER BY 1")
        for key, given in (("categories", filters.categories), ("category_map", list(filters.names))):
            if unknown := sorted(set(given) - set(known)):
                raise UsageError(
                    f"{key}: no category {', '.join(unknown)} in store {store} at snapshot {self.snapshot}; "
                    f"its categories: {', '.join(known) or 'none'}"
                )
        committed = self._column("SELECT run_id FROM runs WHERE snapshot <= ? ORDER BY snapshot", [self.snapshot])
        if unknown := sorted(set(filters.runs) - set(committed)):
            raise UsageError(
                f"runs: no run {', '.join(unknown)} was committed by snapshot {self.snapshot}; committed runs: "
                f"{', '.join(committed) or 'none'} (python -m queries runs store={store})"
            )
        chosen = filters.categories or known
        self.categories = {}
        for category in chosen:
            self.categories.setdefault(filters.names.get(category, category), []).append(category)

    def close(self):
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _column(self, sql: str, params=()) -> list:
        return [row[0] for row in self.con.execute(sql, params).fetchall()]

    def _given(self) -> list[tuple[str, str, dict]]:
        """The filters given: as the user wrote them, as SQL conditions on `JOINED`, and their parameters."""
        f, given = self.filters, []
        if f.runs:
            given.append((f"runs=[{','.join(f.runs)}]", "list_contains($runs::VARCHAR[], l.run_id)", {"runs": f.runs}))
        if f.categories:
            condition = "list_contains($given::VARCHAR[], l.category)"
            given.append((f"categories=[{','.join(f.categories)}]", condition, {"given": f.categories}))
        if f.splits:
            condition = " AND ".join(f"list_contains($splits::VARCHAR[], {IMAGE_SPLIT.format(a=a)})" for a in "st")
            given.append((f"split=[{','.join(f.splits)}]", condition, {"splits": f.splits}))
        return given

    def _picked(self, names: list[str] | None = None, splits: dict[str, str] | None = None) -> tuple[str, dict]:
        """SQL of the selected labels with their images' columns, ranked within their pair,
        of the export's categories `names` (default: all). A pair's `split` is its images'
        split when they share one, after `splits` (manifest split -> a format's) where given."""
        names = list(self.categories) if names is None else names
        params = {"categories": [c for n in names for c in self.categories[n]]}
        where = ["list_contains($categories::VARCHAR[], l.category)"]
        for _, condition, values in self._given():
            where.append(condition)
            params |= values
        if splits:
            split = "($split_to::VARCHAR[])[list_position($split_from::VARCHAR[], {image})]"
            params |= {"split_from": list(splits), "split_to": list(splits.values())}
        else:
            split = "{image}"
        src, tgt = (split.format(image=IMAGE_SPLIT.format(a=a)) for a in "st")
        category = "l.category"
        if self.filters.names:
            category = "coalesce(($to::VARCHAR[])[list_position($from::VARCHAR[], l.category)], l.category)"
            params |= {"from": list(self.filters.names), "to": list(self.filters.names.values())}
        images = ", ".join(f"{a}.{c} AS {end}_{c}" for a, end in (("s", "src"), ("t", "tgt")) for c in IMAGE_COLUMNS)
        sql = f"""
            SELECT l.* REPLACE ({category} AS category), {images}, CASE WHEN {src} = {tgt} THEN {src} END AS split,
                   {IMAGE_SPLIT.format(a="s")} AS src_split, {IMAGE_SPLIT.format(a="t")} AS tgt_split,
                   row_number() OVER (PARTITION BY l.category, l.src_image_id, l.tgt_image_id {RANK}) AS rank
            FROM {JOINED}
            WHERE {" AND ".join(where)}"""
        if self.filters.max_per_pair:
            sql = f"SELECT * FROM ({sql}) WHERE rank <= $cap"
            params["cap"] = self.filters.max_per_pair
        return sql, params

    def counts(self, splits: dict[str, str] | None = None) -> pd.DataFrame:
        """Pairs and labels of the selection by pair split (after `splits`; None: none) and
        the images' manifest splits."""
        sql, params = self._picked(splits=splits)
        return self.con.execute(
            f"""SELECT split, src_split, tgt_split, count(DISTINCT ({", ".join(PAIR)})) AS pairs, count(*) AS labels
                FROM ({sql}) GROUP BY ALL ORDER BY ALL NULLS LAST""",
            params,
        ).df()

    def pairs(self, name: str, splits: dict[str, str]) -> pa.Table:
        """One row per image pair of the export's category `name` that has a split after
        `splits`, in order: its images' columns, the split, `labels` and its `points`
        (src_x, src_y, tgt_x, tgt_y each) in rank order."""
        sql, params = self._picked([name], splits)
        point = ", ".join(
            f"{c}: {c}" for c in POINT
        )  # one ordered list, not one per coordinate: a quarter of the sorts
        return self.con.execute(
            f"""SELECT {", ".join(PAIR)}, split, {", ".join(f"{e}_{c}" for e in ("src", "tgt") for c in IMAGE_COLUMNS)},
                       count(*)::INTEGER AS labels, list({{{point}}} ORDER BY rank) AS points
                FROM ({sql}) WHERE split IS NOT NULL GROUP BY ALL ORDER BY {", ".join(PAIR)}""",
            params,
        ).fetch_arrow_table()

    def labels(self, batch_rows: int = 1 << 20) -> pa.RecordBatchReader:
        """Every selected label (LABELS: the store's columns and the pair's split), streamed in order."""
        sql, params = self._picked()
        reader = self.con.execute(
            f"SELECT {', '.join(LABELS.names)} FROM ({sql}) ORDER BY {', '.join(PAIR)}, rank", params
        ).fetch_record_batch(batch_rows)
        return pa.RecordBatchReader.from_batches(LABELS, (batch.cast(LABELS) for batch in reader))

    def why_empty(self) -> str:
        """Which filter left no labels, and what there was to choose from."""
        steps = self._given()
        params = {k: v for _, _, p in steps for k, v in p.items()}
        so_far = [" AND ".join(c for _, c, _ in steps[: i + 1]) for i in range(len(steps))]
        counts = self.con.execute(
            f"SELECT count(*){''.join(f', count(*) FILTER (WHERE {c})' for c in so_far)} FROM {JOINED}", params
        ).fetchone()
        said = [f"snapshot {self.snapshot} of store {self.store} holds {counts[0]:,} current labels"]
        said += [f"{name} leaves {n:,}" for (name, _, _), n in zip(steps, counts[1:])]
        if self.filters.splits:
            splits = self._column(f"SELECT DISTINCT {IMAGE_SPLIT.format(a='images')} FROM images ORDER BY 1")
            said.append(f"the images are of splits {', '.join(splits)}")
        return (
            f"{'; '.join(said)}; python -m queries labels_per_category store={self.store} at={self.snapshot} shows "
            "what each run and category holds"
        )


def points(pairs: pa.Table, end: str) -> np.ndarray:
    """(labels, 2) x, y of one end (src or tgt) of every label of `pairs` (Selection.pairs), in order."""
    flat = pc.list_flatten(pairs["points"])
    return np.stack([pc.struct_field(flat, f"{end}_{c}").to_numpy() for c in "xy"], axis=1).astype(np.float64)


def per_pair(xy: np.ndarray, pairs: pa.Table, decimals: int = 2) -> list[list[list[float]]]:
    """`xy` (labels, 2), as each pair's list of [x, y] (Python floats, rounded)."""
    cuts = np.cumsum(pairs["labels"].to_numpy())[:-1]
    return [chunk.tolist() for chunk in np.split(xy.round(decimals), cuts)]


def pinned_snapshot(store: LabelStore, at: int | None) -> int:
    """`at`, checked against the store's snapshots, or the latest one."""
    latest = store.current_snapshot()
    if at is None:
        return latest
    con = store.connect()
    try:
        known = {row[0] for row in con.execute("SELECT snapshot_id FROM lake.snapshots()").fetchall()}
    finally:
        con.close()
    if int(at) not in known:
        raise UsageError(
            f"at={at}: store {store} has no snapshot {at} (they run from {min(known)} to {latest}; expired ones "
            f"are gone); python -m queries snapshots store={store} lists them"
        )
    return int(at)
