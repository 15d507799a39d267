"""Bytes in and out of local paths or object stores (s3://...), through pyarrow.fs."""

import os
import uuid

import pyarrow.fs as pafs


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it for a local path or a URI."""
    uri = str(uri)
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
