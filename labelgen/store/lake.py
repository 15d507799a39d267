"""The label store: a DuckLake (a SQL catalog over Parquet files) with tables label_history,
label_pairs, images, bad_inputs, run_stats, spheres and the logs behind the views runs and
models; the view labels shows the current labels (schema.py says which).

Layout under the store URI (a local folder or s3://bucket/prefix):

    catalog.json                                      which catalog the store was created with; written last
    catalog.sqlite                                    the default catalog (catalog.py says which others)
    runs/<run>/labels/category=<c>/part-<p>.parquet    labels of a vote partition of a category, written by its Ray task
    runs/<run>/pairs/category=<c>/part-<p>.parquet     the image pairs that partition examined, with their label counts
    runs/<run>/pairs/category=<c>/retracted.parquet    pairs of replaced images it did not examine: 0 labels now
    runs/<run>/replaced.parquet                       images whose file changed since their features were cached
    runs/<run>/images/category=<c>.parquet             the category's images, n_fg; the chains' counts and partitions
    lake/main/<table>/...                             files DuckLake writes itself (compaction, inserts)
    models/<id>/adapter.pt, spheres/<id>/mapper.pt    weights; their rows live in the catalog
    features/<backbone fingerprint>/...               the feature cache

Why this shape: workers share no disk and S3 has no rename, so tasks write their own
files under deterministic names (a retried task overwrites its own file) and never
open the catalog. The driver then registers a run's files and inserts its rows in one
DuckLake transaction: a reader, this project's or any DuckDB's, sees all of a run or
none of it, a killed run leaves nothing visible, and each commit is a snapshot that a
trained model can pin and a query can go back to.
"""

import os

from ..io import is_remote, join
from .connections import Connections, now
from .registry import Registry
from .runs import Runs
from .staging import Staging

__all__ = ["LabelStore", "now"]  # now: benchmarks import it from here


class LabelStore(Staging, Runs, Registry, Connections):
    """A label store at `uri` (local folder or s3://bucket/prefix), its catalog `catalog` (catalog.py):
    a run's staged files (staging.py), the run log and the commit (runs.py), models and spheres
    (registry.py), connections and snapshots (connections.py)."""

    def __init__(self, uri: str, catalog: str | None = None):
        uri = str(uri)
        self.uri = uri.rstrip("/") if is_remote(uri) else os.path.abspath(os.path.expanduser(uri))
        self.catalog = catalog or None

    def __str__(self):
        return self.uri

    def feature_cache(self, cache: str | None = None) -> str:
        """The feature cache's root: `cache` (a run's features.cache) when given, else features/ in the store."""
        return cache or join(self.uri, "features")
