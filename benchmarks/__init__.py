"""Benchmarks: the service against its yardsticks, as ratios measured in one run (`python -m benchmarks`)."""
