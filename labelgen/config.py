"""One config system: omegaconf defaults per stage, `key=value` overrides on the command line."""

import hashlib
import logging
import sys

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError


class ConfigError(ValueError):
    pass


def _keys(conf, prefix=""):
    for k, v in conf.items():
        if isinstance(v, DictConfig):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def parse_overrides(defaults: dict, argv: list[str], presets: dict | None = None) -> DictConfig:
    """Merge defaults, presets, then `key=value` arguments; unknown keys are errors."""
    bad = [a for a in argv if "=" not in a or a.startswith("=")]
    if bad:
        raise ConfigError(f"arguments {bad} are not key=value overrides, e.g. pairing.k=3")
    base = OmegaConf.create(defaults)
    OmegaConf.set_struct(base, True)
    try:
        return OmegaConf.merge(base, presets or {}, OmegaConf.from_dotlist(argv))
    except (ConfigKeyError, ValidationError) as e:
        known = ", ".join(_keys(base))
        raise ConfigError(f"config: {e.msg.splitlines()[0]}; known keys: {known}") from None


def config_hash(conf: DictConfig) -> str:
    return hashlib.sha256(OmegaConf.to_yaml(conf, sort_keys=True).encode()).hexdigest()[:12]


def run_command(defaults: dict, body, argv=None) -> int:
    """A command line: parse `key=value` overrides of `defaults`, run `body(conf)` for its
    exit code; a user's mistake (bad key, bad input, missing file) prints one line, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return body(parse_overrides(defaults, argv))
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
