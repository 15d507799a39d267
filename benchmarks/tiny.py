"""The tiny demo (2 photos x 4 views, 30 deg apart) that the tests and benchmarks.kills run
the pipeline on, and a run's labels in a canonical order, to compare two runs exactly."""

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
