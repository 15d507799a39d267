"""Every `python -m` entry point: `[-h] [-v] [key=value ...]` over the module's defaults.

`-h` prints the module's purpose and every key with its default and comment (read
from the defaults themselves); `-v` brings Ray's own log lines back; a user's mistake
(bad key, bad input, missing file) prints one line and exits 2. A tool with positional
words (a report's name, a store command's folders) takes them beside its keys.
"""

import inspect
import re
import sys

from omegaconf import OmegaConf

from . import console
from .config import describe, module_doc, overrides, parse_overrides
from .io import Fault

USAGE_ERRORS = (ValueError, FileNotFoundError)  # ConfigError, ManifestError, WeightsNotFound among them
OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")  # how a key=value argument starts; anything else is a word
FLAG = re.compile(r"--([A-Za-z][\w-]*)(?:=(.*))?", re.DOTALL)
OPTIONS = ("-h", "--help", "-v", "--verbose")


def prog_name(body) -> str:
    module = sys.modules[body.__module__]
    name = getattr(module.__spec__, "name", None) or module.__name__
    return "python -m " + name.removesuffix(".__main__")


def help_text(prog: str, doc: str, defaults: dict, tail: str = "") -> str:
    return (
        f"usage: {prog} [-h] [-v] [key=value ...]{tail}\n\n{doc}\n\n"
        "options:\n"
        "  -h, --help     this text\n"
        "  -v, --verbose  also Ray's own log lines, and the whole resolved config\n\n"
        "keys (key=default, then what it means; relative paths are taken from the working directory):\n"
        + (describe(defaults) if defaults else "  (none)")
    )


def old_flags(argv: list[str], defaults: dict) -> list[str]:
    """The flags of the release before as keys, each with a warning: `--some-name V` (or
    `--some-name=V`) is some_name=V, a boolean's `--name` name=true and `--no-name`
    name=false, and a list's flag, given again, adds to the list. A flag that names no key,
    or lacks its value, stays as it is (and is refused as not a key=value override)."""
    out, lists, warned = [], {}, set()
    args = iter(argv)
    for arg in args:
        flag = FLAG.fullmatch(arg) if arg not in OPTIONS else None
        name = flag and flag.group(1).replace("-", "_")
        negated = name and name.startswith("no_") and isinstance(defaults.get(name[3:]), bool)
        if not flag or name not in defaults and not negated:
            out.append(arg)
            continue
        key, value = (name[3:], "false") if negated else (name, flag.group(2))
        if value is None:
            value = "true" if isinstance(defaults[key], bool) else next(args, None)
        if value is None:  # the last argument, without its value
            out.append(arg)
            continue
        if (old := arg.split("=")[0]) not in warned:
            shown = value if isinstance(defaults[key], bool) else "..."
            print(
                f"warning: {old} is deprecated, write {key}={shown}; flags go away in the next release", file=sys.stderr
            )
            warned.add(old)
        if isinstance(defaults[key], list):
            lists.setdefault(key, []).append("'" + value.replace("'", "''") + "'")  # YAML-quoted, as written
        else:
            out.append(f"{key}={value}")
    return out + [f"{key}=[{','.join(values)}]" for key, values in lists.items()]


def run_command(
    defaults: dict,
    body,
    argv=None,
    presets=None,
    tail: str = "",
    words: str | None = None,
    command: str | None = None,
    announce: bool = True,
) -> int:
    """Parse `argv` over `defaults` (and `presets(argv)`, if given), run `body(conf)` for its
    exit code.

    With `words` (their usage, e.g. "REPORT [SQL]"), the arguments that are not key=value
    go to `body(conf, words)`. `command` names a subcommand: its name joins the usage and
    `body`'s docstring is the help. `announce` prints the config a stage runs with first;
    a tool whose output is data (a report, SQL) leaves it out."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog_name(body) + (f" {command}" if command else "")
    if "-h" in argv or "--help" in argv:
        doc = inspect.cleandoc(body.__doc__ or "") if command else module_doc(body)
        print(help_text(prog, doc, defaults, f" {words}" if words else tail))
        return 0
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    console.setup(verbose)
    try:
        argv = old_flags(argv, defaults)
        given = [a for a in argv if words is None or OVERRIDE.match(a) or a.startswith("-")]
        conf = parse_overrides(defaults, given, presets(given) if presets else None)
        if verbose:
            print("resolved config:\n" + OmegaConf.to_yaml(conf), flush=True)
        elif announce:
            print(f"{prog} {' '.join(overrides(conf, defaults)) or '(defaults)'}", flush=True)
        return body(conf) if words is None else body(conf, [a for a in argv if a not in given])
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if fault := Fault.found_in(e):  # not a bug: said in words, without a traceback
            print(f"error: {fault}", file=sys.stderr)
            return 1
        raise
