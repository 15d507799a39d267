"""What a model trains on, read from the catalog once, by the driver: the committed label
runs, the snapshot and the Parquet files that hold them (`trainer.data` reads those files,
on the driver and in every Ray Train worker, which never open the catalog)."""

from omegaconf import OmegaConf

from labelgen.errors import UsageError
from labelgen.features import FeatureCache
from labelgen.store import LabelStore


def choose_runs(con, runs) -> list[str]:
    committed = con.execute(
        "SELECT run_id, backbone, backbone_fingerprint FROM runs WHERE status = 'committed' ORDER BY finished"
    ).fetchall()
    if not committed:
        raise UsageError("the store has no committed label run to train on; run `python -m labelgen.run` first")
    if runs:
        known = {r[0] for r in committed}
        missing = [r for r in runs if r not in known]
        if missing:
            raise UsageError(f"label runs {missing} are not committed in the store; committed: {sorted(known)}")
        return list(runs)
    latest = committed[-1][2]
    return [r[0] for r in committed if r[2] == latest]


def resolve_source(conf) -> dict:
    """Driver side: the snapshot, the runs and the Parquet files that hold them, read from the
    catalog once. Train workers get only this (they never open the catalog), and the model
    records the snapshot, so it can say exactly which labels it saw."""
    store = LabelStore(conf.store, conf.catalog)
    snapshot = store.current_snapshot() if conf.snapshot is None else int(conf.snapshot)
    con = store.connect(snapshot=snapshot)
    try:
        runs = choose_runs(con, conf.runs)
        marks = ", ".join("?" * len(runs))
        info = con.execute(
            f"SELECT DISTINCT backbone, backbone_fingerprint FROM runs WHERE run_id IN ({marks})", runs
        ).fetchall()
        if len(info) != 1:
            raise UsageError(f"label runs {runs} used different backbones {info}: train on runs of one backbone")
        run_config = con.execute("SELECT config FROM runs WHERE run_id = ?", [runs[-1]]).fetchone()[0]
        manifests = [
            m
            for (m,) in con.execute(
                f"SELECT DISTINCT manifest FROM runs WHERE run_id IN ({marks}) ORDER BY 1", runs
            ).fetchall()
        ]
        snapshots = dict(con.execute(f"SELECT run_id, snapshot FROM runs WHERE run_id IN ({marks})", runs).fetchall())
    finally:
        con.close()
    run_conf = OmegaConf.create(run_config)
    return {
        "snapshot": snapshot,
        "runs": runs,
        "run_snapshots": snapshots,
        "backbone": info[0][0],
        "features": FeatureCache(store.feature_cache(run_conf.features.cache), info[0][1]),
        "manifests": manifests,
        "flips": bool(OmegaConf.select(run_conf, "features.flips", default=False)),
        **{table: store.data_files(table, snapshot) for table in ("label_history", "label_pairs", "images")},
    }
