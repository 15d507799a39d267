"""Every `python -m` entry point: `[-h] [-v] [key=value ...]` over the module's defaults.

`-h` prints the module's purpose and every key with its default and comment (read
from the defaults themselves); `config=FILE.yaml` takes keys from a file, the arguments
override them; `-v` brings Ray's own log lines back; a user's mistake (labelgen.errors:
bad key, bad input, missing file) prints one line and exits 2; a fault of the machine
(labelgen.io.Fault: a full disk, a catalog away) one line and exits 1; any other
exception is a bug, said in one line with where it was raised (`-v`: its traceback).
A tool with positional words (a report's name, a store command's folders) takes them
beside its keys.
"""

import inspect
import os
import re
import sys
import traceback

from omegaconf import OmegaConf

from . import console
from .config import describe, module_doc, overrides, parse_overrides
from .errors import MissingInput, UsageError
from .io import Fault

USAGE_ERRORS = (UsageError, MissingInput)  # ConfigError, ManifestError, WeightsNotFound among them
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")  # how a key=value argument starts; anything else is a word
OPTIONS = ("-h", "--help", "-v", "--verbose")


def prog_name(body) -> str:
    module = sys.modules[body.__module__]
    name = getattr(module.__spec__, "name", None) or module.__name__
    return "python -m " + name.removesuffix(".__main__")


def help_text(prog: str, doc: str, defaults: type, tail: str = "", aliases: dict | None = None) -> str:
    return (
        f"usage: {prog} [-h] [-v] [key=value ...]{tail}\n\n{doc}\n\n"
        "options:\n"
        "  -h, --help        this text\n"
        "  -v, --verbose     also Ray's own log lines, and the whole resolved config\n"
        "  config=FILE.yaml  the keys of a YAML file (e.g. a run's: python -m labelgen.store config RUN > FILE.yaml);\n"
        "                    key=value arguments override them\n\n"
        "keys (key=default, then what it means; relative paths are taken from the working directory):\n"
        + (describe(defaults) or "  (none)")
        + "".join(f"\n  {short}=...  is {key}=..." for short, key in (aliases or {}).items())
    )


def expand(argv: list[str], aliases: dict[str, str]) -> list[str]:
    """`store=X` as the key it stands for (`data.store=X`), so that every command that reads a
    store takes the same spelling."""
    out = []
    for arg in argv:
        short, eq, value = arg.partition("=")
        out.append(f"{aliases[short]}={value}" if eq and short in aliases else arg)
    return out


def run_command(
    defaults: type,
    body,
    argv=None,
    presets=None,
    tail: str = "",
    words: str | None = None,
    command: str | None = None,
    announce: bool = True,
    aliases: dict[str, str] | None = None,
) -> int:
    """Parse `argv` over the dataclass `defaults` (and `presets(argv)`, if given), run
    `body(conf)` for its exit code.

    With `words` (their usage, e.g. "REPORT [SQL]"), the arguments that are not key=value
    go to `body(conf, words)`. `command` names a subcommand: its name joins the usage and
    `body`'s docstring is the help. `announce` prints the config a stage runs with first;
    a tool whose output is data (a report, SQL) leaves it out. `aliases` maps a short key to
    the key it stands for (store= for data.store=)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog_name(body) + (f" {command}" if command else "")
    if "-h" in argv or "--help" in argv:
        doc = inspect.cleandoc(body.__doc__ or "") if command else module_doc(body)
        print(help_text(prog, doc, defaults, f" {words}" if words else tail, aliases))
        return 0
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    console.setup(verbose)
    try:
        argv = expand(argv, aliases or {})
        given = [a for a in argv if words is None or OVERRIDE.match(a) or a.startswith("-")]
        conf = parse_overrides(defaults, given, presets(given) if presets else None)
        if verbose:
            print("resolved config:\n" + OmegaConf.to_yaml(conf), flush=True)
        elif announce:
            print(f"{prog} {' '.join(overrides(conf, defaults)) or '(defaults)'}", flush=True)
        return body(conf) if words is None else body(conf, [a for a in argv if a not in given])
    except USAGE_ERRORS as e:
        print(f"error: {getattr(e, 'cause', None) or e}", file=sys.stderr)  # a Ray task's: its own message
        return 2
    except Exception as e:
        if fault := Fault.found_in(e):  # not a bug: said in words, without a traceback
            print(f"error: {fault}", file=sys.stderr)
            return 1
        if verbose:
            raise
        print(f"error: {bug_line(e)}", file=sys.stderr)
        return 1


def bug_line(e: BaseException) -> str:
    """An unexpected exception in one line: its type, the last line of its message (a Ray
    task's error carries the remote traceback before it), and where this code raised it."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(ROOT)]
    where = f" at {os.path.relpath(frames[-1].filename, ROOT)}:{frames[-1].lineno}" if frames else ""
    return (
        f"{type(e).__name__}: {lines[-1] if lines else ''} (an unexpected error{where}; "
        "run again with -v for the traceback, and report it if the message does not say what to change)"
    )
