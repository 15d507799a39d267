"""Every `python -m` entry point: `[-h] [-v] [key=value ...]` over the stage's defaults.

`-h` prints the module's purpose and every key with its default and comment (read
from the defaults themselves); `-v` brings Ray's own log lines back; a user's mistake
(bad key, bad input, missing file) prints one line and exits 2.
"""

import argparse
import sys

from omegaconf import OmegaConf

from . import console
from .config import describe, module_doc, overrides, parse_overrides
from .io import Fault


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """argparse help for the tools with flags: the module docstring as written, defaults shown."""


USAGE_ERRORS = (ValueError, FileNotFoundError)  # ConfigError, ManifestError, WeightsNotFound among them


def prog_name(body) -> str:
    module = sys.modules[body.__module__]
    return "python -m " + (getattr(module.__spec__, "name", None) or module.__name__)


def help_text(prog: str, doc: str, defaults: dict, tail: str = "") -> str:
    return (f"usage: {prog} [-h] [-v] [key=value ...]{tail}\n\n{doc}\n\n"
            "options:\n  -h, --help     this text\n  -v, --verbose  also Ray's own log lines, and the whole resolved config\n\n"
            "keys (key=default, then what it means; relative paths are taken from the working directory):\n"
            + describe(defaults))


def run_command(defaults: dict, body, argv=None, presets=None, tail: str = "") -> int:
    """Parse `argv` over `defaults` (and `presets(argv)`, if given), run `body(conf)` for its
    exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog_name(body)
    if "-h" in argv or "--help" in argv:
        print(help_text(prog, module_doc(body), defaults, tail))
        return 0
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    console.setup(verbose)
    try:
        conf = parse_overrides(defaults, argv, presets(argv) if presets else None)
        if verbose:
            print("resolved config:\n" + OmegaConf.to_yaml(conf), flush=True)
        else:
            print(f"{prog} {' '.join(overrides(conf, defaults)) or '(defaults)'}", flush=True)
        return body(conf)
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if fault := Fault.found_in(e):  # not a bug: said in words, without a traceback
            print(f"error: {fault}", file=sys.stderr)
            return 1
        raise
