"""A read-through copy of feature cache files on the node's own disk, for one attempt of a run.

The chains read each image's features many times: once per chunk of tuples that holds it,
60-90 chunks, since tuples are random walks over the category. From the store (S3 on a
cluster) they are read once per node; the node's copy serves the rest. Copies live under
the temporary folder, one folder per attempt (its `key`), which the run removes on every
node when its chains and votes are done (`remove_copies`); a killed attempt's copies go
when the run is resumed.
"""

import hashlib
import os
import shutil
import tempfile
import uuid

from .io import read_bytes

COPIES = os.path.join(tempfile.gettempdir(), "labelgen-copies")


class NodeCopy:
    """Files read through this node's copy; `reads` counts those that came from their URI.
    Nothing is copied while the temporary disk has less than `reserve_gb` free."""

    def __init__(self, key: str, reserve_gb: float = 5.0):
        self.dir, self.reserve, self.reads = os.path.join(COPIES, key), reserve_gb * 2**30, 0

    def read(self, uri: str) -> bytes:
        local = os.path.join(self.dir, hashlib.sha1(uri.encode()).hexdigest())
        try:
            with open(local, "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        data, self.reads = read_bytes(uri), self.reads + 1
        os.makedirs(self.dir, exist_ok=True)
        if shutil.disk_usage(self.dir).free > self.reserve + len(data):
            tmp = f"{local}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, local)  # whole or absent, when two tasks of the node copy one file at once
        return data


def remove_copies(prefix: str) -> int:
    """Delete this node's copies of the attempts whose key starts with `prefix`; how many."""
    keys = [k for k in (os.listdir(COPIES) if os.path.isdir(COPIES) else []) if k.startswith(prefix)]
    for k in keys:
        shutil.rmtree(os.path.join(COPIES, k), ignore_errors=True)
    return len(keys)
