"""The tests: a package, so that pytest and a shell name its harnesses alike. From the
repository's root, `python -m tests.faults.kills --help` runs one, and the tests import
it as `tests.faults.kills` (pytest puts the root, not tests/, on sys.path)."""
