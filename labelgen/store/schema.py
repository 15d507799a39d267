"""The store's tables: Parquet schemas of the rows Ray tasks write, and the catalog's own tables.

Data tables (`labels`, `images`, `bad_inputs`) are filled by registering the Parquet
files a run's tasks wrote. The run, model and sphere registries are small tables of
rows; `run_log` and `model_log` only ever append (a state change is a new row), and the
views `runs` and `models` show each one's latest row, so no commit rewrites a file.
"""

import pandas as pd
import pyarrow as pa

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
    ]
)
BAD_INPUT_SCHEMA = pa.schema(
    [("run_id", pa.string()), ("image_id", pa.string()), ("uri", pa.string()), ("stage", pa.string()), ("error", pa.string())]
)
DATA_TABLES = {"labels": LABEL_SCHEMA, "images": IMAGE_SCHEMA, "bad_inputs": BAD_INPUT_SCHEMA}

# times are UTC; JSON columns hold what the pipeline reports (counts, metrics)
LOG_TABLES = {
    "run_log": """run_id VARCHAR, status VARCHAR, started TIMESTAMP, finished TIMESTAMP, manifest VARCHAR, backbone VARCHAR,
        backbone_fingerprint VARCHAR, label_features VARCHAR, sphere_id VARCHAR, config VARCHAR, config_hash VARCHAR,
        code_version VARCHAR, counts JSON, error VARCHAR, logged TIMESTAMP""",
    "run_stats": """run_id VARCHAR, category VARCHAR, labels BIGINT, image_pairs BIGINT, mean_cycle_error DOUBLE,
        mean_similarity DOUBLE, mean_support DOUBLE, max_hops INTEGER, counts JSON""",
    "model_log": """model_id VARCHAR, parent VARCHAR, label_runs JSON, snapshot BIGINT, backbone_fingerprint VARCHAR,
        config VARCHAR, created TIMESTAMP, metrics JSON, decision VARCHAR, decided TIMESTAMP, reason VARCHAR,
        checkpoint VARCHAR, ray VARCHAR, ray_checkpoint VARCHAR, logged TIMESTAMP""",
    "spheres": """sphere_id VARCHAR, label_run VARCHAR, backbone_fingerprint VARCHAR, categories VARCHAR[], images INTEGER,
        train_s DOUBLE, history JSON, config VARCHAR, checkpoint VARCHAR, created TIMESTAMP""",
}
COLUMNS = {name: [c.split()[0] for c in ddl.split(",")] for name, ddl in LOG_TABLES.items()}
JSON_COLUMNS = {"counts", "label_runs", "metrics", "history"}
COMMIT_MESSAGE = "labelgen run"  # the snapshot that commits a run carries this message and the run id

# Stored in the catalog, so any DuckDB that attaches the store AS lake sees them.
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
}


def images_table(frame: pd.DataFrame) -> pa.Table:
    """Image rows in IMAGE_SCHEMA; columns the manifest lacks (e.g. homography) are null."""
    cols = {n: frame[n] if n in frame.columns else [None] * len(frame) for n in IMAGE_SCHEMA.names}
    return pa.table({n: pa.array(list(v), type=IMAGE_SCHEMA.field(n).type, from_pandas=True) for n, v in cols.items()})
