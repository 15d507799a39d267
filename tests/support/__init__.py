"""Test support: what tests and harnesses share besides conftest's fixtures (`tiny`: the tiny
demo, made-up runs and labels)."""

import argparse


def help_only(name: str, doc: str, argv=None):
    """`python -m <name>` of a module that runs nothing by itself: --help says what it is
    (exit 0); anything else is a usage error (exit 2)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {name}",
        description=doc.strip(),
        epilog="It runs nothing by itself: the tests and the harnesses of tests/faults use it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    parser.error("it runs nothing by itself (see --help)")
