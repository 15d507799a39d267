"""Where training's metrics go, so that a run can be watched as it trains and compared after:
TensorBoard event files beside the run's checkpoints, and an MLflow run when a tracking URI
is given.

The driver opens a run (`run`: the MLflow run is made there) and hands its `Tracking` to
Ray Train's workers; the rank-0 worker writes each step's loss and learning rate into it,
as Ray Train's guide to experiment tracking does, and the driver adds the held-out scores
and the decision once training is done. TensorBoard shows both processes' event files as
one run. Event files are written where the process runs; for storage on an object store
(s3://) they are written to a local folder and copied up whole at every flush, so
`tensorboard --logdir s3://...` follows a run on a cluster too.
"""

import math
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.summary import scalar, text

from labelgen.errors import UsageError
from labelgen.io import is_remote, join, write_bytes


@dataclass
class TrackingConf:
    tensorboard: bool = True  # event files under <checkpoint storage>/<model id>/tensorboard (tensorboard --logdir
    # <checkpoint storage>)
    mlflow: str | None = None  # an MLflow tracking URI (http://host:5000; a folder with MLFLOW_ALLOW_FILE_STORE=true):
    # the same metrics to an MLflow run named by the model id (pip install 'labelgen[mlflow]')
    experiment: str = "labelgen"  # the MLflow experiment of those runs


default_conf = TrackingConf
MLFLOW_BATCH = 1000  # metrics per log_batch call (MLflow's limit); params and tags: 100
PARENT_TAG = "mlflow.parentRunId"  # MLflow shows a run with this tag nested under that run


@dataclass(frozen=True)
class Tracking:
    """Where one run's metrics go (nothing set: nowhere); plain values, for Ray Train's workers."""

    logdir: str | None = None  # TensorBoard
    mlflow: str | None = None  # the tracking URI
    run_id: str | None = None  # the MLflow run


def mlflow_uri(uri: str | None) -> str | None:
    """A folder as a file:// URI: Ray Train's workers run in folders of their own."""
    return uri and (uri if urlparse(uri).scheme else f"file://{os.path.abspath(os.path.expanduser(uri))}")


def mlflow_client(uri: str):
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise UsageError(
            f"tracking.mlflow={uri}: MLflow is not installed; pip install 'labelgen[mlflow]' (or leave tracking.mlflow "
            "unset: TensorBoard files are written anyway)"
        ) from None
    try:
        return MlflowClient(tracking_uri=uri)
    except MlflowException as e:  # e.g. MLflow 3 refuses a folder unless MLFLOW_ALLOW_FILE_STORE=true
        raise UsageError(f"tracking.mlflow={uri}: {e}") from None


def metric_name(tag: str) -> str:
    """A metric's name as both TensorBoard and MLflow take it: kpt_pck@0.10 is kpt_pck_0.10."""
    return re.sub(r"[^\w.\-/]", "_", tag)


def flat(d: dict, prefix: str = ""):
    """(dotted key, value) of a nested dict: a config as MLflow params."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def chunks(items: list, n: int):
    return (items[i : i + n] for i in range(0, len(items), n))


@contextmanager
def run(conf, logdir: str, name: str, params: dict, tags: dict, parent: Tracking | None = None):
    """A run's tracking, from the driver: its MLflow run made first (nested under `parent`'s, if
    any) and ended FINISHED, or FAILED on an error; yields the driver's `Tracker` into it."""
    logdir = logdir if conf.tensorboard else None
    where = mlflow_run(conf, logdir, name, params, tags, parent) if conf.mlflow else Tracking(logdir)
    status = "FAILED"
    try:
        with Tracker(where, ".driver") as tracker:
            yield tracker
        status = "FINISHED"
    finally:
        if where.run_id:
            mlflow_client(where.mlflow).set_terminated(where.run_id, status)


def mlflow_run(conf, logdir: str | None, name: str, params: dict, tags: dict, parent: Tracking | None) -> Tracking:
    """A new MLflow run named `name` in experiment `conf.experiment`, with the config as its params."""
    from mlflow.entities import Param

    client = mlflow_client(conf.mlflow)
    found = client.get_experiment_by_name(conf.experiment)
    experiment = found.experiment_id if found else client.create_experiment(conf.experiment)
    if parent and parent.run_id:
        tags = {**tags, PARENT_TAG: parent.run_id}
    run_id = client.create_run(experiment, run_name=name, tags={k: str(v) for k, v in tags.items()}).info.run_id
    for some in chunks([Param(k, str(v)[:6000]) for k, v in flat(params)], 100):
        client.log_batch(run_id, params=some)
    return Tracking(logdir, conf.mlflow, run_id)


class Tracker:
    """One process's scalars into a run's tracking: `log` them as they come, `flush` to show
    them (the event file copied up when the logdir is remote, the metrics sent to MLflow).
    Events are written as they are logged (tensorboardX's own writer writes them from a
    thread later: a flush would miss the latest)."""

    def __init__(self, where: Tracking, suffix: str, purge_step: int | None = None):
        """`suffix` keeps this process's event file apart from the others' in the logdir;
        `purge_step`: a run resumed from a checkpoint at that step hides the steps logged after
        it by the attempt that failed."""
        self.where, self.pending, self.events, self.staging = where, [], None, None
        if where.logdir:
            self.staging = tempfile.mkdtemp(prefix="labelgen-tensorboard-") if is_remote(where.logdir) else None
            folder = self.staging or where.logdir
            os.makedirs(folder, exist_ok=True)
            # events.out.tfevents.<time>.<host><suffix>
            self.events = EventsWriter(os.path.join(folder, "events"), suffix)
            if purge_step:
                self.events.write_event(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))
        self.client = mlflow_client(where.mlflow) if where.run_id else None

    def write(self, summary, step: int):
        self.events.write_event(Event(summary=summary, step=step, wall_time=time.time()))

    def log(self, scalars: dict, step: int):
        """Finite values only: a score with nothing to measure it on (NaN) is left out."""
        now = int(time.time() * 1000)
        for tag, value in ((metric_name(t), v) for t, v in scalars.items() if v is not None and math.isfinite(v)):
            if self.events:
                self.write(scalar(tag, value), step)
            if self.client:
                self.pending.append((tag, float(value), now, step))

    def note(self, tag: str, words: str):
        """Words beside the numbers (a decision and its reason): a text in TensorBoard, a tag in MLflow."""
        if self.events:
            self.write(text(tag, words), 0)
        if self.client:
            self.client.set_tag(self.where.run_id, tag, words)

    def flush(self):
        if self.events:
            self.events.flush()
        for file in os.listdir(self.staging) if self.staging else []:  # whole: event files are small
            with open(os.path.join(self.staging, file), "rb") as f:
                write_bytes(join(self.where.logdir, file), f.read())
        if self.client:
            from mlflow.entities import Metric

            for some in chunks([Metric(*m) for m in self.pending], MLFLOW_BATCH):
                self.client.log_batch(self.where.run_id, metrics=some)
        self.pending = []

    def close(self):
        self.flush()
        if self.events:
            self.events.close()
        if self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def watch(conf, storage: str, name: str) -> list[str]:
    """Where a user watches run `name`, one line per place."""
    lines = [f"tensorboard --logdir {storage}  (run {name}/tensorboard)"] if conf.tensorboard else []
    if conf.mlflow:
        lines.append(f"MLflow run {name}, experiment {conf.experiment}, at {conf.mlflow}")
    return lines
