"""Bytes in and out of local paths or object stores (s3://...), through pyarrow.fs.

S3 credentials come from the standard AWS chain (environment, profile, instance
role). Arrow ignores AWS_ENDPOINT_URL, so it is read here: set AWS_ENDPOINT_URL
(or AWS_ENDPOINT_URL_S3) for S3-compatible servers.
"""

import os
import uuid
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
        return _s3(endpoint, env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")), uri[len("s3://"):].rstrip("/")
    if is_remote(uri):
        return pafs.FileSystem.from_uri(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def resolve(uri: str, base_dir: str) -> str:
    """A manifest's relative URI taken relative to the manifest's folder."""
    if is_remote(uri) or os.path.isabs(os.path.expanduser(uri)):
        return os.path.expanduser(uri)
    return join(base_dir, uri)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write so that readers see the whole file or nothing (rename locally, one PUT on S3)."""
    fs, path = filesystem(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(uri: str, recursive: bool = True) -> list[str]:
    """Paths (inside the filesystem) of the files under a folder; none if it is absent."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def list_dirs(uri: str) -> list[str]:
    """Names of the folders directly under a folder."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
