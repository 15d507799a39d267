"""The report's markdown, for every section's writer: a table of result rows, and a section
put in place in a written report (`python -m benchmarks.exchange out=BENCHMARKS.md`). It
imports no measurement, so that any module of the package may import it."""

import os
import sys


def table(rows: list[dict], fmt: dict | None = None) -> str:
    """The first row's keys are the columns; a float is formatted by `fmt[column]`, else .3g."""
    fmt = fmt or {}
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [format(r[k], fmt.get(k, ".3g")) if isinstance(r[k], float) else str(r[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_section(path: str, section: str):
    """Put `section` (a markdown `## ` section) in place of the one with its heading, or at the end."""
    text = open(path).read() if os.path.exists(path) else ""
    head = section.splitlines()[0]
    if head in text:
        start = text.index(head)
        end = text.find("\n## ", start + len(head))
        text = text[:start] + section.rstrip() + "\n" + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    from benchmarks import library_main

    sys.exit(library_main(__spec__.name, __doc__))
