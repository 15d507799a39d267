"""Fault injection, kept beside the tests that run it at small counts: `python -m
tests.faults.<name> --help` from the repository's root says how to run one at full size.

kills           SIGKILLed label runs, readers and trainers, each store checked after
catalog_stress  concurrent commits on a PostgreSQL catalog, conflicts provoked on purpose
postgres        the throwaway PostgreSQL server they (and the tests' fixture) start
s3              an S3 proxy that answers SlowDown and drops connections
"""
