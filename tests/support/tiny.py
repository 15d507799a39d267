"""The tiny demo (2 photos x 4 views, 30 deg apart) that the tests and tests.faults.kills run
the pipeline on, and a run's labels in a canonical order, to compare two runs exactly; the
smallest run the store takes (a started run, made-up labels), for the store's tests and
its stress harness."""

TINY_DEMO = {"photos": ["chelsea", "motorcycle"], "azimuths": [-45, -15, 15, 45], "elevations": [0]}


def build_tiny_demo(root: str) -> str:
    """The tiny demo's images under `root`; its manifest's path."""
    from labelgen.demo import build_demo

    return build_demo({**TINY_DEMO, "root": root})


def tiny_demo_args(manifest: str) -> list[str]:
    """Command-line overrides that run the pipeline on the tiny demo."""
    from omegaconf import OmegaConf

    from labelgen.config import overrides
    from labelgen.pipeline import DEMO_PRESET, default_conf

    return [f"data.manifest={manifest}", *overrides(OmegaConf.merge(default_conf, DEMO_PRESET), default_conf)]


def labels_of(store: str, run_id: str, categories=None):
    """A run's committed labels, superseded or not (without run_id) in a canonical order."""
    from labelgen.store import LabelStore

    con = LabelStore(store).connect()
    try:
        df = con.execute("SELECT * EXCLUDE (run_id) FROM label_history WHERE run_id = ?", [run_id]).df()
    finally:
        con.close()
    if categories is not None:
        df = df[df["category"].isin(categories)]
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def begin_run(store, run_id: str, digest: str = "h") -> dict:
    """Log a run as started, with the least of a record a commit needs."""
    return store.begin_run(
        {
            "run_id": run_id,
            "manifest": "m.parquet",
            "backbone": "mobilenetv2",
            "backbone_fingerprint": "fp",
            "config": "k: 1",
            "config_hash": digest,
        }
    )


def label_table(run_id: str, category: str, pairs: dict[tuple[str, str], int], **values):
    """Made-up labels: n for each (source, target) image pair, the i-th at source x = i;
    other columns from `values`, else constants (null where the column allows it)."""
    import pyarrow as pa

    from labelgen.store import LABEL_SCHEMA

    same = {"src_y": 0.0, "tgt_x": 1.0, "tgt_y": 2.0, "hops": 1, "cycle_error": 0.5, "similarity": 0.9, "support": 1}
    rows = [
        {
            **same,
            **values,
            "run_id": run_id,
            "category": category,
            "src_image_id": a,
            "tgt_image_id": b,
            "src_x": float(i),
        }
        for (a, b), n in pairs.items()
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)


if __name__ == "__main__":
    from tests.support import help_only

    help_only(__spec__.name, __doc__)
