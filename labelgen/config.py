"""One config system: typed defaults per stage, `key=value` overrides on the command line.

A stage's defaults are a dataclass next to the code that uses it (an OmegaConf structured
config), one field per line with a trailing comment. The field's type is what its key takes
(`X | None`: null too; `Location`: a place, made absolute at the entry point); `describe`
reads the comments back from the class bodies for `--help`, so the help cannot drift from
the defaults the code runs with. `config=FILE.yaml` gives keys from a file (a run's stored
config: `python -m labelgen.store config RUN`), key=value arguments override them.
"""

import ast
import difflib
import functools
import hashlib
import inspect
import io
import json
import math
import os
import sys
import tokenize
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from typing import Annotated

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from .errors import UsageError

# A folder, a file or a URI: a relative one is made absolute against the caller's working
# directory at the entry point, before any Ray worker (which runs elsewhere: Ray Train
# changes into its own folder) sees it. URIs (s3://...) stay as given.
Location = Annotated[str, "location"]


@dataclass
class StoreConf:
    """Where labels live: the base of every entry point's defaults that reads or writes a store."""

    store: Location = "labelstore"  # a folder or s3://bucket/prefix
    catalog: str | None = None  # the store's catalog: none = the one it was made with (new: catalog.sqlite in it) |
    # postgres:<libpq string> | sqlite:<file>


class ConfigError(UsageError):
    """Raised before any work; names every bad argument, one per line, and what to give."""


class _UnknownKey(ConfigError):
    """An argument that names no key: the refusal lists the known ones."""


def _keys(conf, prefix=""):
    for k, v in conf.items():
        if isinstance(v, (dict, DictConfig)):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def kinds(defaults: type, prefix: str = "") -> dict[str, object]:
    """Every key of the dataclass `defaults` (nested ones dotted) -> its declared type."""
    hints = typing.get_type_hints(defaults, include_extras=True)
    out = {}
    for f in fields(defaults):
        kind = hints[f.name]
        out.update(kinds(kind, f"{prefix}{f.name}.") if is_dataclass(kind) else {prefix + f.name: kind})
    return out


def _optional(kind) -> tuple[object, bool]:
    """`X | None` as (X, True), anything else as (it, False)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return kind, False


def is_location(kind) -> bool:
    return _optional(kind)[0] == Location


@functools.cache
def _structured(defaults: type) -> DictConfig:
    """The defaults as OmegaConf's typed config, built once per class (half of a parse's
    time); `OmegaConf.merge` copies it, so it is never changed."""
    return OmegaConf.structured(defaults)


def plain(defaults: type) -> dict:
    """The defaults as nested dicts of their values."""
    return OmegaConf.to_container(_structured(defaults))


def absolute(location):
    """A location as given, made absolute if it is a relative local path."""
    if not isinstance(location, str) or "://" in location:
        return location
    return os.path.abspath(os.path.expanduser(location))


def resolve_paths(conf: DictConfig, types: dict[str, object]) -> DictConfig:
    """`conf` with its locations (by `types`: key -> declared type) made absolute."""
    for key, kind in types.items():
        value = OmegaConf.select(conf, key)
        if is_location(kind) and isinstance(value, str):
            OmegaConf.update(conf, key, absolute(value))
    return conf


def parse_overrides(defaults: type, argv: list[str], presets: dict | None = None) -> DictConfig:
    """Merge the dataclass `defaults`, presets, a `config=FILE.yaml`'s keys, then `key=value`
    arguments; locations come out absolute.

    Each key must be one of `defaults` and take a value of its declared type (text as
    written for a text key; a section takes only keys); an interpolation must resolve to
    one. Every argument that does not, and a key given twice with two values, is refused
    in one ConfigError. The result holds plain values, as a stored config does."""
    base = _structured(defaults)
    try:
        conf = OmegaConf.merge(base, presets or {})
    except (ConfigKeyError, ValidationError) as e:
        raise ConfigError(
            f"config: {e.msg.splitlines()[0]}; known keys: {', '.join(k for k, _ in _keys(base))}"
        ) from None
    types = kinds(defaults)
    problems, known = _apply(conf, argv, types)
    if problems:
        raise ConfigError(_refusal(problems, known))
    out = OmegaConf.create(OmegaConf.to_container(conf))
    OmegaConf.set_struct(out, True)
    return resolve_paths(out, types)


def _apply(conf: DictConfig, argv: list[str], kinds: dict) -> tuple[list[str], list[str]]:
    """Set every good key of a `config=` file, then of every good argument, in `conf`; the
    problems of the others, and the known keys when one names no key."""
    leaves = dict(_keys(OmegaConf.to_container(conf)))
    sections = {".".join(k.split(".")[:n]) for k in leaves for n in range(1, k.count(".") + 1)}
    files = [a for a in argv if isinstance(a, str) and a.startswith("config=")]
    bad = [a for a in argv if a not in files and (not isinstance(a, str) or "=" not in a or a.startswith("="))]
    problems = [f"arguments {bad} are not key=value overrides, e.g. pairing.k=3 (see --help)"] if bad else []
    items = []  # (argument, where) of the file's keys, then of the arguments
    if len(files) > 1:
        problems.append(f"config= is given {len(files)} times ({', '.join(files)}); give one file")
    elif files:
        try:
            items = _file_items(files[0])
        except ConfigError as e:
            problems.append(str(e))
    items += [(a, "") for a in argv if a not in bad and a not in files]
    unknown, given = False, {}  # key -> (value, where)
    for item, where in items:
        try:
            arg, key, value, text = _read(item, leaves, sections) if not where else item
            for k, v in _override(arg, key, value, text, kinds, leaves, sections):
                if not where and k in given and not given[k][1] and given[k][0] != v:
                    raise ConfigError(
                        f"{arg}: {k} is given twice, {_show_value(given[k][0])} and {_show_value(v)}; give it once"
                    )
                given[k] = v, where
                OmegaConf.update(conf, k, v, merge=True)
        except ConfigError as e:
            problems.append(str(e))
            unknown |= isinstance(e, _UnknownKey)
    return problems + _unresolved(conf, given, leaves, kinds), list(leaves) if unknown else []


def _file_items(arg: str) -> list[tuple[tuple, str]]:
    """The keys of `config=FILE.yaml` as ((argument, key, value, text as written), FILE)."""
    path = arg.split("=", 1)[1]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        values = OmegaConf.to_container(OmegaConf.create(text))
        written = dict(_written(yaml.compose(text, Loader=yaml.SafeLoader)))
    except OSError as e:
        raise ConfigError(f"{_named(arg)}: the file cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{_named(arg)}: holds bytes that are not UTF-8; give a UTF-8 YAML file") from None
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"{_named(arg)}: cannot be read as YAML ({str(e).strip().splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{_named(arg)}: holds no keys; give a YAML mapping, e.g. pairing: {{k: 3}}")
    return [
        ((f"{key}={written.get(key, _show(value))} (in {path})", key, value, written.get(key)), path)
        for key, value in _keys(values)
    ]


def _written(node, prefix: str = ""):
    """(key, text as written) of a YAML document's plain scalars: what a text key keeps."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield from _written(v, f"{prefix}{k.value}.")
    elif isinstance(node, yaml.ScalarNode) and node.style is None and prefix:
        yield prefix[:-1], node.value


def _read(arg: str, leaves: dict, sections: set) -> tuple[str, str, object, str]:
    """A `key=value` argument as (the argument as a message quotes it, key, value, text)."""
    if _undecodable(arg):
        raise ConfigError(f"{arg!r}: holds bytes that are not UTF-8 (as the shell passed them); give it as UTF-8 text")
    arg, (key, text) = _named(arg), arg.split("=", 1)
    _check_key(arg, key, leaves, sections)  # an unknown key is said before a value it cannot read
    return arg, key, _value(arg, key, text), text


def _refusal(problems: list[str], known: list[str]) -> str:
    """One problem on one line, several one per line; after an unknown key, the known ones."""
    lines = problems + ([f"known keys: {', '.join(known)}"] if known else [])
    return "config: " + ("; ".join(lines) if len(problems) == 1 else f"{len(problems)} problems\n" + "\n".join(lines))


def _override(arg: str, key: str, value, text, kinds: dict, leaves: dict, sections: set) -> list[tuple[str, object]]:
    """The (key, value) pairs that setting `key` to `value` makes, each checked against its type."""
    _check_key(arg, key, leaves, sections)
    if key not in sections:
        return [(key, _checked(arg, key, kinds[key], leaves[key], value, text))]
    if not isinstance(value, dict):
        example = next(k for k in leaves if k.startswith(key + "."))
        raise ConfigError(
            f"{arg}: {key} is a section of keys, not a value; set one of them, e.g. {example}={_show(leaves[example])}"
        )
    pairs = [(f"{key}.{k}", v) for k, v in _keys(value)]
    for k, _ in pairs:
        _check_key(arg, k, leaves, sections)
    return [(k, _checked(arg, k, kinds[k], leaves[k], v)) for k, v in pairs if k not in sections]


def _check_key(arg: str, key: str, leaves: dict, sections: set):
    """A key of the config, or the ConfigError saying which part is not."""
    if key in leaves or key in sections:
        return
    parts, head = key.split("."), ""
    for n, part in enumerate(parts):
        head = f"{head}.{part}" if n else part
        if head in leaves:
            raise ConfigError(f"{arg}: {head} is a value, not a section; give {head}=<value>")
        if head not in sections:
            close = difflib.get_close_matches(key, leaves, n=3)
            raise _UnknownKey(
                f"{arg}: Key '{part}' is not in struct: the config has no key {key}"
                + (f"; did you mean {' or '.join(close)}?" if close else "")
            )


def _value(arg: str, key: str, text: str):
    """The value as OmegaConf reads `key=<text>`: YAML (3 an int, [a, b] a list, nothing null)."""
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]))["value"]
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        reason = str(e).strip().splitlines()[0]
        raise ConfigError(
            f"{arg}: {_show_value(text)} cannot be read as a value ({reason}); quote text that holds "
            f"brackets, braces, quotes or a colon, e.g. {key}='...'"
        ) from None


def _checked(arg: str, key: str, kind, default, value, text: str | None = None):
    """`value` for a key of type `kind` (text as written, for a text key), or the ConfigError
    saying what the key takes."""
    inner, optional = _optional(kind)
    if isinstance(value, str) and "${" in value:  # an interpolation: checked once resolved
        return value
    if inner in (str, Location) and text is not None and isinstance(value, (bool, int, float)):
        return text.strip()
    if not (value is None and optional or _fits(inner, value)):
        raise ConfigError(f"{arg}: {key} takes {_kind(kind)} (default {_show(default)}), not {_show_value(value)}")
    return value


def _fits(kind, value) -> bool:
    """Whether `value` is of type `kind`."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if kind is float:
        return (isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63) or (
            isinstance(value, float) and math.isfinite(value)
        )
    if kind in (str, Location):
        return isinstance(value, str)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_fits(item, v) for v in value)
    return False


def _kind(kind) -> str:
    inner, optional = _optional(kind)
    if typing.get_origin(inner) is list:
        items = {
            bool: "true or false",
            int: "integers",
            float: "finite numbers",
            str: "text",
            Location: "paths or URIs",
        }
        what = f"a list of {items.get(typing.get_args(inner)[0], 'values')}"
    else:
        names = {
            bool: "true or false",
            int: "an integer",
            float: "a finite number",
            str: "text",
            Location: "a path or URI",
        }
        what = names.get(inner, "a value")
    return f"{what} or null" if optional else what


def _unresolved(conf: DictConfig, given: dict, leaves: dict, kinds: dict) -> list[str]:
    """The given interpolations that do not resolve, or not to a value of their key's type."""
    problems = []
    for key, (value, where) in given.items():
        if not (isinstance(value, str) and "${" in value):
            continue
        arg = _named(f"{key}={value}") + (f" (in {where})" if where else "")
        try:
            resolved = OmegaConf.select(conf, key, throw_on_resolution_failure=True)
            resolved = OmegaConf.to_container(resolved) if OmegaConf.is_config(resolved) else resolved
            _checked(arg, key, kinds[key], leaves[key], resolved)
        except OmegaConfBaseException as e:
            problems.append(
                f"{arg}: the interpolation does not resolve ({str(e).strip().splitlines()[0]}); "
                "fix it, or give the value itself"
            )
        except ConfigError as e:
            problems.append(f"{e} (what {value} resolves to)")
    return problems


def _undecodable(text: str) -> bool:
    """Text that is not valid Unicode: lone surrogates, what bytes that are not UTF-8 become
    in sys.argv."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _named(arg: str) -> str:
    """An argument as a message quotes it: as given, or its repr if it holds control characters."""
    return arg if arg.isprintable() else repr(arg)


def _show_value(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}... ({len(text):,} characters)"


def known_keys(values: dict, defaults: type) -> dict:
    """`values` without the keys `defaults` no longer has: the config of a run made by an older
    labelgen (e.g. labels.min_confidence, now labels.keep), taken as the base of a new one."""

    def known(values: dict, defaults: dict) -> dict:
        return {
            k: known(v, defaults[k]) if isinstance(v, dict) and isinstance(defaults[k], dict) else v
            for k, v in values.items()
            if k in defaults
        }

    return known(values, plain(defaults))


def overrides(conf: DictConfig, defaults: type) -> list[str]:
    """The keys of `conf` that differ from `defaults`, as `key=value`."""
    base = dict(_keys(plain(defaults)))
    return [f"{k}={_show(v)}" for k, v in _keys(OmegaConf.to_container(conf)) if base.get(k) != v]


def config_hash(conf: DictConfig) -> str:
    return hashlib.sha256(OmegaConf.to_yaml(conf, sort_keys=True).encode()).hexdigest()[:12]


def collection_manifest(defaults: type, conf, name: str) -> tuple[DictConfig, str]:
    """A built-in collection's merged config and manifest path,
    <root>/<name>-<hash of the config without root>/manifest.parquet: another config, another folder."""
    conf = OmegaConf.merge(_structured(defaults), conf or {})
    body = OmegaConf.masked_copy(conf, [k for k in conf if k != "root"])
    digest = hashlib.sha256(json.dumps(OmegaConf.to_container(body), sort_keys=True).encode()).hexdigest()[:10]
    return conf, os.path.join(os.path.abspath(conf.root), f"{name}-{digest}", "manifest.parquet")


@cache
def _source_comments(filename: str) -> tuple[ast.Module, dict[int, str]]:
    """The module's tree, and line -> its trailing comment; a comment alone on the next
    lines continues the one above it (a long help text, wrapped)."""
    with open(filename) as f:
        text = f.read()
    comments, first = {}, {}  # first: a continuation line -> the line its comment belongs to
    for t in tokenize.generate_tokens(io.StringIO(text).readline):
        if t.type != tokenize.COMMENT:
            continue
        line, note = t.start[0], t.string.lstrip("# ").strip()
        above = first.get(line - 1, line - 1)
        if t.line.lstrip().startswith("#") and above in comments:
            comments[above] += " " + note
            first[line] = above
        else:
            comments[line] = note
    return ast.parse(text), comments


def _notes(defaults: type) -> dict[str, str]:
    """Field -> the comment at its line in the class body, over the dataclasses `defaults`
    inherits from (a field declared again takes its new line's)."""
    notes = {}
    for cls in reversed([c for c in defaults.__mro__ if is_dataclass(c)]):
        tree, comments = _source_comments(inspect.getsourcefile(cls))
        for stmt in _class_def(tree, cls.__qualname__).body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                notes[stmt.target.id] = comments.get(stmt.end_lineno, "")
    return notes


def _class_def(node: ast.AST, qualname: str, prefix: str = "") -> ast.ClassDef | None:
    """The class statement of `qualname` (A.B, f.<locals>.C) in a module's tree."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef) and prefix + child.name == qualname:
            return child
        if isinstance(child, ast.ClassDef):
            found = _class_def(child, qualname, f"{prefix}{child.name}.")
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found = _class_def(child, qualname, f"{prefix}{child.name}.<locals>.")
        else:
            found = _class_def(child, qualname, prefix)
        if found:
            return found
    return None


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def describe(defaults: type) -> str:
    """Every key of the dataclass `defaults` with its default and its comment, one per line."""
    rows = []

    def walk(cls, values: dict, prefix=""):
        hints, notes = typing.get_type_hints(cls), _notes(cls)
        for f in fields(cls):
            if is_dataclass(hints[f.name]):
                walk(hints[f.name], values[f.name], f"{prefix}{f.name}.")
            else:
                rows.append((f"{prefix}{f.name}={_show(values[f.name])}", notes[f.name]))

    walk(defaults, plain(defaults))
    width = min(48, max((len(r[0]) for r in rows), default=0))
    return "\n".join(
        f"  {key:{width}s}  {note}".rstrip() if len(key) <= width else f"  {key}\n  {'':{width}s}  {note}".rstrip()
        for key, note in rows
    )


def module_doc(obj) -> str:
    """The docstring of the module that defines `obj` (a function or a module)."""
    module = obj if inspect.ismodule(obj) else sys.modules[obj.__module__]
    return inspect.cleandoc(module.__doc__ or "")
