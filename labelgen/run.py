"""`python -m labelgen.run [key=value ...]`: manifest -> features -> tuples -> chains -> store.

With no arguments it renders the built-in collection of 3D object categories
(once; `data.builtin=demo` takes the planar photo demo instead) and labels it on
a local Ray instance; with RAY_ADDRESS set, or under `ray job submit`, it
runs on that cluster. The algorithms live in plain modules, the run in
`labelgen.pipeline`; this file is its command line.

A run does only what is new: images that a committed run already labelled with the
same label features and label config anchor no tuple, and no label between two of
them is made again, so a repeated run adds nothing and a grown collection costs what
it grew by (`new_only=false` labels every image again, superseding the old labels).
"""

import sys

from .cli import run_command
from .pipeline import default_conf, label, presets


def run(conf) -> int:
    return label(conf)


def main(argv=None) -> int:
    return run_command(default_conf, run, argv, presets)


if __name__ == "__main__":
    sys.exit(main())
