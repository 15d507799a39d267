"""One config system: omegaconf defaults per stage, `key=value` overrides on the command line.

The defaults are plain dicts next to the code that uses them, one key per line with a
trailing comment; `describe` reads those comments back from the source for `--help`,
so the help cannot drift from the defaults the code runs with.
"""

import ast
import hashlib
import inspect
import io
import json
import os
import sys
import tokenize
from functools import cache

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

# Keys with these names hold locations: a relative one is made absolute against the
# caller's working directory at the entry point, before any Ray worker (which runs
# elsewhere: Ray Train changes into its own folder) sees it. URIs (s3://...) stay.
PATH_KEYS = frozenset({"store", "manifest", "cache", "weights", "sd_weights", "storage", "spair", "output", "root"})


PACKAGES = ("labelgen", "trainer", "queries", "cluster", "benchmarks")  # whose defaults `describe` reads


class ConfigError(ValueError):
    pass


def _keys(conf, prefix=""):
    for k, v in conf.items():
        if isinstance(v, (dict, DictConfig)):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def absolute(location):
    """A location as given, made absolute if it is a relative local path."""
    if not isinstance(location, str) or "://" in location:
        return location
    return os.path.abspath(os.path.expanduser(location))


def resolve_paths(conf: DictConfig) -> DictConfig:
    for key, value in _keys(conf):
        if key.rsplit(".", 1)[-1] in PATH_KEYS and isinstance(value, str):
            OmegaConf.update(conf, key, absolute(value))
    return conf


def parse_overrides(defaults: dict, argv: list[str], presets: dict | None = None) -> DictConfig:
    """Merge defaults, presets, then `key=value` arguments; unknown keys are errors;
    locations come out absolute."""
    bad = [a for a in argv if "=" not in a or a.startswith("=")]
    if bad:
        raise ConfigError(f"arguments {bad} are not key=value overrides, e.g. pairing.k=3 (see --help)")
    base = OmegaConf.create(defaults)
    OmegaConf.set_struct(base, True)
    try:
        conf = OmegaConf.merge(base, presets or {}, OmegaConf.from_dotlist(argv))
    except (ConfigKeyError, ValidationError) as e:
        known = ", ".join(k for k, _ in _keys(base))
        raise ConfigError(f"config: {e.msg.splitlines()[0]}; known keys: {known}") from None
    return resolve_paths(conf)


def overrides(conf: DictConfig, defaults: dict) -> list[str]:
    """The keys of `conf` that differ from `defaults`, as `key=value`."""
    base = dict(_keys(defaults))
    return [f"{k}={_show(v)}" for k, v in _keys(OmegaConf.to_container(conf)) if base.get(k) != v]


def config_hash(conf: DictConfig) -> str:
    return hashlib.sha256(OmegaConf.to_yaml(conf, sort_keys=True).encode()).hexdigest()[:12]


def collection_manifest(defaults: dict, conf, name: str) -> tuple[DictConfig, str]:
    """A built-in collection's merged config and manifest path,
    <root>/<name>-<hash of the config without root>/manifest.parquet: another config, another folder."""
    conf = OmegaConf.merge(OmegaConf.create(defaults), conf or {})
    body = OmegaConf.masked_copy(conf, [k for k in conf if k != "root"])
    digest = hashlib.sha256(json.dumps(OmegaConf.to_container(body), sort_keys=True).encode()).hexdigest()[:10]
    return conf, os.path.join(os.path.abspath(conf.root), f"{name}-{digest}", "manifest.parquet")


@cache
def _source_comments(filename: str) -> tuple[ast.Module, dict[int, str]]:
    with open(filename) as f:
        text = f.read()
    comments = {t.start[0]: t.string.lstrip("# ").strip()
                for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT}
    return ast.parse(text), comments


def _walk_literal(node: ast.Dict, value: dict, comments: dict[int, str], out: dict):
    for key, child in zip(node.keys, node.values):
        if isinstance(key, ast.Constant) and key.value in value:
            sub = value[key.value]
            if isinstance(child, ast.Dict) and isinstance(sub, dict):
                _walk_literal(child, sub, comments, out)
            elif child.end_lineno in comments:
                out.setdefault(id(value), {})[key.value] = comments[child.end_lineno]


def _comments() -> dict[int, dict[str, str]]:
    """id(dict) -> key -> comment, for the module-level dict literals of this project's
    loaded modules (the defaults of every stage)."""
    out = {}
    for module in list(sys.modules.values()):
        name = getattr(getattr(module, "__spec__", None), "name", None) or module.__name__
        filename = getattr(module, "__file__", None) or ""
        if name.split(".")[0] not in PACKAGES or not filename.endswith(".py"):
            continue
        tree, comments = _source_comments(filename)
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict) and isinstance(stmt.targets[0], ast.Name):
                value = getattr(module, stmt.targets[0].id, None)
                if isinstance(value, dict):
                    _walk_literal(stmt.value, value, comments, out)
    return out


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def describe(defaults: dict) -> str:
    """Every key of `defaults` with its default and its comment, one per line."""
    notes, rows = _comments(), []

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                rows.append((f"{prefix}{k}={_show(v)}", notes.get(id(d), {}).get(k, "")))

    walk(defaults)
    width = min(48, max(len(r[0]) for r in rows))
    return "\n".join(f"  {key:{width}s}  {note}".rstrip() if len(key) <= width else f"  {key}\n  {'':{width}s}  {note}".rstrip()
                     for key, note in rows)


def module_doc(obj) -> str:
    """The docstring of the module that defines `obj` (a function or a module)."""
    module = obj if inspect.ismodule(obj) else sys.modules[obj.__module__]
    return inspect.cleandoc(module.__doc__ or "")
