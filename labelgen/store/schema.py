"""The store's tables: Parquet schemas of the rows Ray tasks write, and the catalog's own tables.

Data tables (`label_history`, `label_pairs`, `images`, `bad_inputs`) are filled by
registering the Parquet files a run's tasks wrote. The run, model and sphere registries
are small tables of rows; `run_log` and `model_log` only ever append (a state change is a
new row), and the views `runs` and `models` show each one's latest row, so no commit
rewrites a file.

Every label is counted once: `label_history` keeps every run's labels, `label_pairs` the
image pairs each run examined (with how many labels it kept, maybe none), and the view
`labels` shows only the current ones: for each ordered image pair, the labels of the
latest committed run that examined it. A relabel round supersedes the round before
without deleting anything, so a model's pinned snapshot still reads what it trained on.
"""

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

LABEL_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("category", pa.string()),
        ("src_image_id", pa.string()),
        ("tgt_image_id", pa.string()),
        ("src_x", pa.float32()),
        ("src_y", pa.float32()),
        ("tgt_x", pa.float32()),
        ("tgt_y", pa.float32()),
        ("hops", pa.int32()),
        ("cycle_error", pa.float32()),
        ("similarity", pa.float32()),
        ("sphere_angle", pa.float32()),
        ("support", pa.int32()),  # tuples whose chains proposed this label
        ("pair_error", pa.float32()),  # patches from the source to where the target's direct nearest neighbour lands
        ("pose_gap", pa.float32()),  # degrees of rotation between the two views; null without pose
        ("confidence", pa.float32()),  # P(correct) from the signals (labels.confidence)
    ]
)
IMAGE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("image_id", pa.string()),
        ("category", pa.string()),
        ("uri", pa.string()),
        ("mask_uri", pa.string()),
        ("azimuth", pa.float64()),
        ("elevation", pa.float64()),
        ("split", pa.string()),
        ("width", pa.int32()),  # original pixels; null when the image took part in no tuple
        ("height", pa.int32()),
        ("n_fg", pa.int32()),  # foreground patches; null when the image took part in no tuple
        ("homography", pa.list_(pa.float64())),  # photo -> view, where truth is known (the demo)
        ("truth_uri", pa.string()),  # part truth of a rendered view (labelgen.truth), where known
        ("theta", pa.float64()),  # in-plane rotation, degrees
        ("pose_source", pa.string()),  # given | estimated: <estimator> (azimuth null: too unsure to use) | null: none
        ("pose_confidence", pa.float64()),  # the estimator's confidence (1 where given)
        ("mask_source", pa.string()),  # given | the foreground estimator that made it (labelgen.foreground)
    ]
)
PAIR_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("category", pa.string()),
        ("src_image_id", pa.string()),
        ("tgt_image_id", pa.string()),
        ("labels", pa.int32()),  # kept after every filter; 0: examined, none kept (still supersedes)
    ]
)
BAD_INPUT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
    ]
)
DATA_TABLES = {
    "label_history": LABEL_SCHEMA,
    "label_pairs": PAIR_SCHEMA,
    "images": IMAGE_SCHEMA,
    "bad_inputs": BAD_INPUT_SCHEMA,
}

# times are UTC; JSON columns hold what the pipeline reports (counts, metrics)
LOG_TABLES = {
    "run_log": """run_id VARCHAR, status VARCHAR, started TIMESTAMP, finished TIMESTAMP, manifest VARCHAR,
        backbone VARCHAR, backbone_fingerprint VARCHAR, label_features VARCHAR, sphere_id VARCHAR, config VARCHAR,
        config_hash VARCHAR, code_version VARCHAR, counts JSON, error VARCHAR, logged TIMESTAMP, label_hash VARCHAR""",
    "run_stats": """run_id VARCHAR, category VARCHAR, labels BIGINT, image_pairs BIGINT, mean_cycle_error DOUBLE,
        mean_similarity DOUBLE, mean_support DOUBLE, max_hops INTEGER, counts JSON""",
    "model_log": """model_id VARCHAR, parent VARCHAR, label_runs JSON, snapshot BIGINT, backbone_fingerprint VARCHAR,
        config VARCHAR, created TIMESTAMP, metrics JSON, decision VARCHAR, decided TIMESTAMP, reason VARCHAR,
        checkpoint VARCHAR, ray VARCHAR, ray_checkpoint VARCHAR, logged TIMESTAMP""",
    "spheres": """sphere_id VARCHAR, label_run VARCHAR, backbone_fingerprint VARCHAR, categories VARCHAR[],
        images INTEGER, train_s DOUBLE, history JSON, config VARCHAR, checkpoint VARCHAR, created TIMESTAMP""",
}
COLUMNS = {name: [c.split()[0] for c in ddl.split(",")] for name, ddl in LOG_TABLES.items()}
JSON_COLUMNS = {"counts", "label_runs", "metrics", "history"}
COMMIT_MESSAGE = "labelgen run"  # the snapshot that commits a run carries this message and the run id


def current_pairs_sql(pairs: str, runs: str) -> str:
    """Per ordered image pair, the latest committed run (by its commit snapshot) of `runs`
    (run_id, snapshot) that examined it in `pairs` (PAIR_SCHEMA rows): the store's view
    and the trainer's workers, which read the Parquet files, share this one definition."""
    return f"""
        SELECT p.category, p.src_image_id, p.tgt_image_id, arg_max(p.run_id, r.snapshot) AS run_id,
               arg_max(p.labels, r.snapshot) AS labels, count(*) AS runs
        FROM {pairs} p JOIN {runs} r USING (run_id)
        GROUP BY p.category, p.src_image_id, p.tgt_image_id"""


def current_labels_sql(history: str, current: str) -> str:
    """The labels of `history` whose run is their pair's current run in `current`."""
    return f"SELECT h.* FROM {history} h SEMI JOIN {current} c USING (run_id, category, src_image_id, tgt_image_id)"


# Stored in the catalog, so any DuckDB that attaches the store AS lake sees them (in this order).
VIEWS = {
    "runs": f"""
        SELECT r.* EXCLUDE (logged), s.snapshot_id AS snapshot
        FROM (FROM lake.run_log QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY logged DESC) = 1) r
        LEFT JOIN (SELECT commit_extra_info AS run_id, snapshot_id FROM lake.snapshots()
                   WHERE commit_message = '{COMMIT_MESSAGE}') s USING (run_id)""",
    # the latest promotion is 'promoted', earlier ones 'retired'; undecided models are 'training'
    "models": """
        WITH latest AS (FROM lake.model_log QUALIFY row_number() OVER (PARTITION BY model_id ORDER BY logged DESC) = 1)
        SELECT * EXCLUDE (logged),
               CASE WHEN decision = 'promoted' AND decided < max(decided) FILTER (WHERE decision = 'promoted') OVER ()
                    THEN 'retired' ELSE coalesce(decision, 'training') END AS status
        FROM latest""",
    "current_pairs": current_pairs_sql("lake.label_pairs", "lake.runs"),
    "labels": current_labels_sql("lake.label_history", "lake.current_pairs"),
}


def pair_table(run_id: str, category: str, examined: pa.Table, kept: pa.Table) -> pa.Table:
    """PAIR_SCHEMA rows: the ordered image pairs that have candidates in `examined`, with the
    labels `kept` of each (0 where every candidate was filtered out)."""
    pairs = examined.select(["src_image_id", "tgt_image_id"]).group_by(["src_image_id", "tgt_image_id"]).aggregate([])
    counts = (
        kept.select(["src_image_id", "tgt_image_id"])
        .group_by(["src_image_id", "tgt_image_id"])
        .aggregate([([], "count_all")])
    )
    joined = pairs.join(counts, ["src_image_id", "tgt_image_id"]).sort_by(
        [("src_image_id", "ascending"), ("tgt_image_id", "ascending")]
    )
    n = joined.num_rows
    return pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "category": pa.array([category] * n, pa.string()),
            "src_image_id": joined["src_image_id"],
            "tgt_image_id": joined["tgt_image_id"],
            "labels": pc.fill_null(joined["count_all"], 0).cast(pa.int32()),
        },
        schema=PAIR_SCHEMA,
    )


def images_table(frame: pd.DataFrame) -> pa.Table:
    """Image rows in IMAGE_SCHEMA; columns the manifest lacks (e.g. homography) are null."""
    cols = {n: frame[n] if n in frame.columns else [None] * len(frame) for n in IMAGE_SCHEMA.names}
    return pa.table({n: pa.array(list(v), type=IMAGE_SCHEMA.field(n).type, from_pandas=True) for n, v in cols.items()})
