"""Readers that turn data sets on disk into manifests and evaluation pairs."""
