"""TEMP shim (issue 28 integration): the adapter lives in labelgen.models."""

from labelgen.io import write_bytes
from labelgen.models import Adapter, Bottleneck, checkpoint, load_checkpoint

__all__ = ["Adapter", "Bottleneck", "load_adapter", "save_adapter"]


def save_adapter(adapter, path, extra=None):
    write_bytes(str(path), checkpoint(adapter, **(extra or {})))


def load_adapter(source):
    return load_checkpoint(Adapter, source if isinstance(source, (bytes, str)) else source.read())
