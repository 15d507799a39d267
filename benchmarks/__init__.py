"""Benchmarks: the service against its yardsticks, as ratios measured in one run (`python -m benchmarks`)."""

import sys


def library_main(name: str, doc: str, argv=None) -> int:
    """`python -m benchmarks.<name>` of a module that runs nothing by itself (a part of
    `python -m benchmarks`): `--help` says what it is."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(f"usage: python -m {name} [-h]\n\n{doc.strip()}\n\nIt runs nothing by itself: python -m benchmarks does.")
        return 0
    print(f"error: {name} runs nothing by itself; run python -m benchmarks (see --help)", file=sys.stderr)
    return 2
