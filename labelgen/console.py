"""The console is for people: our own log lines, one progress bar per stage, a summary.

Ray's own INFO lines (start-up, Ray Data's progress reports, Ray Train's controller)
stay in Ray's session folder (/tmp/ray/session_latest/logs); `-v` brings them back.
"""

import logging
import sys
import time
from contextlib import contextmanager

from tqdm import tqdm

_verbose = False

# Ray's warning that token authentication is on: `ray_utils.init_ray` says it in our words.
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _Plain(logging.Formatter):
    """The message alone, marked when it is a warning or an error."""

    def format(self, record):
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup(verbose: bool = False):
    """Our loggers at INFO; Ray's at WARNING unless verbose."""
    global _verbose
    _verbose = verbose
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s") if verbose else _Plain())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("ray").setLevel(ray_level())
    logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.INFO if verbose else logging.ERROR)


def ray_level() -> int:
    """The level of Ray's loggers, here and in Ray's workers."""
    return logging.INFO if _verbose else logging.WARNING


def quiet_ray_data():
    """Ray Data logs everything to its session file and INFO (a progress report every
    10 s when stdout is not a terminal) to the console: keep the file, and leave the
    console to our bar. Its errors reach the user as the exception we report."""
    import ray.data  # noqa: F401  (configures the "ray.data" logger)
    from ray.data._internal.logging import SessionFileHandler

    ray.data.DataContext.get_current().enable_progress_bars = _verbose
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, SessionFileHandler):
            handler.setLevel(logging.INFO if _verbose else logging.CRITICAL)


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, CI, `ray job logs`) a plain line
    every `every_s` seconds and one at the end, so that a log stays a page."""

    def __init__(self, total: int, desc: str, unit: str, every_s: float = 30.0, file=None):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.file = file or sys.stderr
        self.done, self.t0 = 0, time.perf_counter()
        self.shown = self.t0
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.file) if self.file.isatty() else None

    def update(self, n: int):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.shown >= self.every_s and self.done < self.total:
            self.shown, elapsed = now, now - self.t0
            rate = self.done / elapsed
            left = (self.total - self.done) / rate if rate else float("nan")
            print(
                f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({100 * self.done / max(1, self.total):.0f}%), "
                f"{rate:.1f} {self.unit}/s, about {left:.0f} s left",
                file=self.file,
                flush=True,
            )

    def close(self):
        if self.bar is not None:
            self.bar.close()
            return
        elapsed = time.perf_counter() - self.t0
        print(
            f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} in {elapsed:.1f} s "
            f"({self.done / elapsed if elapsed else 0:.1f} {self.unit}/s)",
            file=self.file,
            flush=True,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Stages:
    """Wall seconds per stage of a run, in the order they ran: `with stages("features"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float):
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def line(self) -> str:
        """`ray start 3.1 s, features 20.3 s, ..., total 41.0 s`: total is the wall time since the start."""
        parts = [f"{name} {s:.1f} s" for name, s in self.seconds.items()]
        return ", ".join([*parts, f"total {time.perf_counter() - self.t0:.1f} s"])
