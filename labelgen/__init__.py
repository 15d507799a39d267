"""Distributed pseudo-label generation for semantic correspondence (DIY-SC) on Ray."""

__version__ = "0.1.0"
