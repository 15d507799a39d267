"""Bytes in and out of local paths or object stores (s3://...), through pyarrow.fs.

S3 credentials come from the standard AWS chain (environment, profile, instance
role). Arrow ignores AWS_ENDPOINT_URL, so it is read here: set AWS_ENDPOINT_URL
(or AWS_ENDPOINT_URL_S3) for S3-compatible servers.

Object-store calls are retried here as well as in the AWS SDK: the SDK does not
retry a 503 without a body (a throttled HEAD), and under sustained throttling its
retry quota runs out and it stops retrying at all (seen against a proxy failing 2
requests in 7: the SDK coped alone for ~30 objects, then this layer took over).
Every write is also checked against the object's size and every read against the
size the store reports; a mismatch or a transient error is tried again, with backoff.
"""

import errno
import logging
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import pyarrow.fs as pafs


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


@lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=endpoint,
        region=region or "us-east-1",
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=8),
    )


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it for a local path or a URI."""
    uri = str(uri)
    if uri.startswith("s3://") and "?" not in uri:
        env = os.environ
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        return _s3(endpoint, env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")), uri[len("s3://") :].rstrip("/")
    if is_remote(uri):
        return pafs.FileSystem.from_uri(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def resolve(uri: str, base_dir: str) -> str:
    """A manifest's relative URI taken relative to the manifest's folder."""
    if is_remote(uri) or os.path.isabs(os.path.expanduser(uri)):
        return os.path.expanduser(uri)
    return join(base_dir, uri)


log = logging.getLogger(__name__)
TRANSIENT = re.compile(
    r"HTTP status "
    r"5\d\d|slow_?down|SERVICE_UNAVAILABLE|RequestTimeout|InternalError|INTERNAL_FAILURE|curl|connection|timed? ?out|"
    r"Broken pipe|size mismatch",
    re.IGNORECASE,
)
ATTEMPTS = 6


class Fault(OSError):
    """A fault of the machine or a server, not of the input or the code: the entry points
    say it in words (no traceback) and exit 1; the same command resumes once it is fixed."""

    @classmethod
    def found_in(cls, e: BaseException) -> "Fault | None":
        """The fault behind an error: itself, its causes, or (from a Ray Data worker, which
        passes on only the text) one named in its message."""
        seen = e
        while seen is not None:
            cause = getattr(seen, "cause", None)  # a Ray task's error is also an instance of its cause's class
            if isinstance(seen, cls):
                return cause if isinstance(cause, cls) else seen
            seen = cause or seen.__cause__ or seen.__context__
        for kind in cls.__subclasses__():
            if m := re.search(rf"{kind.__name__}: (.+)", str(e)):
                return kind(m.group(1))
        return None


class DiskFull(Fault):
    """No space left where a file is written: says where, how much was free and needed."""

    @classmethod
    def at(cls, path: str, needed: int) -> "DiskFull":
        folder = os.path.dirname(path)
        while folder and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        free = shutil.disk_usage(folder or "/").free
        return cls(
            f"{folder}: no space left on its disk ({free:,} bytes free, {needed:,} needed for "
            f"{os.path.basename(path)}); free space there (or give the store or cache another folder), then run "
            "the same command again: a run resumes with its run_id"
        )


class Incomplete(OSError):
    """An object store answered with fewer bytes than the object has (or stored fewer than sent)."""


def retrying(uri: str, fn):
    """fn() for an object-store URI, again after a transient error (0.2 s, 0.4 s, ... up to 5 s)."""
    if not is_remote(uri):
        return fn()
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except OSError as e:
            if attempt == ATTEMPTS - 1 or not TRANSIENT.search(str(e)):
                raise
            log.warning("%s: %s; trying again (%d of %d)", uri, str(e).splitlines()[0], attempt + 2, ATTEMPTS)
            time.sleep(min(5.0, 0.2 * 2**attempt))


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)

    def read():
        with fs.open_input_file(path) as f:
            size, data = f.size(), f.read()
        if len(data) != size:
            raise Incomplete(f"{uri}: read {len(data)} of {size} bytes (size mismatch)")
        return data

    return retrying(uri, read)


def read_head(uri: str, n: int) -> bytes:
    """The first `n` bytes of a file (a ranged read on S3)."""
    fs, path = filesystem(uri)

    def read():
        with fs.open_input_file(path) as f:
            return f.read(n)

    return retrying(uri, read)


def versions(uris) -> list[str]:
    """What identifies each file's content without reading it, its size and modification
    time ("" for None or a missing file): a file replaced under the same name gets another."""
    uris = list(uris)
    out, batches = [""] * len(uris), []
    for i, uri in enumerate(uris):
        if uri:
            fs, path = filesystem(uri)
            if not batches or batches[-1][0] is not fs or len(batches[-1][1]) == 256:
                batches.append((fs, []))
            batches[-1][1].append((i, path))

    def stat(batch):
        fs, items = batch
        return items, retrying(items[0][1], lambda: fs.get_file_info([p for _, p in items]))

    with ThreadPoolExecutor(16) as pool:  # on S3 a HEAD per file: many at once
        for items, infos in pool.map(stat, batches):
            for (i, _), info in zip(items, infos):
                if info.type == pafs.FileType.File:
                    out[i] = f"{info.size}:{info.mtime_ns}"
    return out


def write_bytes(uri: str, data: bytes) -> None:
    """Write so that readers see the whole file or nothing (rename locally, one object on S3,
    checked for its size and written again if it came out short)."""
    fs, path = filesystem(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            if os.path.exists(tmp):
                os.remove(tmp)  # nothing half-written stays behind
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull.at(path, len(data)) from None
            raise
        return

    def write():
        with fs.open_output_stream(path) as f:
            f.write(data)
        stored = fs.get_file_info(path).size
        if stored != len(data):
            raise Incomplete(f"{uri}: stored {stored} of {len(data)} bytes (size mismatch)")

    retrying(uri, write)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return retrying(uri, lambda: fs.get_file_info(path).type != pafs.FileType.NotFound)


def list_files(uri: str, recursive: bool = True) -> list[str]:
    """Paths (inside the filesystem) of the files under a folder; none if it is absent."""
    fs, path = filesystem(uri)
    infos = retrying(uri, lambda: fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True)))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def list_dirs(uri: str) -> list[str]:
    """Names of the folders directly under a folder."""
    fs, path = filesystem(uri)
    infos = retrying(uri, lambda: fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True)))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
