"""Posed 3D object categories rendered headless, with exact part-level truth: the
yardstick for semantic correspondence (different instances, viewpoint change,
self-occlusion, left/right twin parts)."""

from .collection import ObjectsConf, build_collection, default_conf

__all__ = ["ObjectsConf", "build_collection", "default_conf"]
