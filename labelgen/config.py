"""One config system: omegaconf defaults per stage, `key=value` overrides on the command line.

The defaults are plain dicts next to the code that uses them, one key per line with a
trailing comment; `describe` reads those comments back from the source for `--help`,
so the help cannot drift from the defaults the code runs with.
"""

import ast
import difflib
import hashlib
import inspect
import io
import json
import math
import os
import sys
import tokenize
from functools import cache

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from .errors import UsageError

# Keys with these names hold locations: a relative one is made absolute against the
# caller's working directory at the entry point, before any Ray worker (which runs
# elsewhere: Ray Train changes into its own folder) sees it. URIs (s3://...) stay.
PATH_KEYS = frozenset(
    {
        "store",
        "manifest",
        "cache",
        "weights",
        "sd_weights",
        "sam_weights",
        "storage",
        "spair",
        "output",
        "root",
        "workdir",
        "out",
    }
)
# Keys with these names (and those whose default is text) hold text: a value YAML would
# read as a number or a boolean (run_id=20240101, labels.sphere=off) is kept as written.
TEXT_KEYS = PATH_KEYS | {"run_id", "model_id", "catalog", "address", "version"}
# Number keys that also take null, which turns their check off (labels.keep=null keeps every label).
OPTIONAL_KEYS = frozenset({"keep", "max_gap_deg", "pair_radius"})
# Keys whose default is null (none given) that take an integer (a snapshot id: at=3).
INTEGER_KEYS = frozenset({"at"})


# Where labels live, for every entry point that reads or writes a store: spread into its
# defaults (`**STORE_DEFAULTS`), where `describe` finds these comments.
STORE_DEFAULTS = {
    "store": "labelstore",  # a folder or s3://bucket/prefix
    "catalog": None,  # the store's catalog: none = the one it was made with (new: catalog.sqlite in it) |
    # postgres:<libpq string> | sqlite:<file>
}

PACKAGES = ("labelgen", "trainer", "queries", "cluster", "benchmarks", "tests")  # whose defaults `describe` reads


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
    """Merge defaults, presets, then `key=value` arguments; locations come out absolute.

    Each argument must name a key and give a value of its default's kind (an integer for
    an int, a list for a list, only keys for a section; a key whose default is None takes
    anything, text for TEXT_KEYS); an interpolation must resolve to one. Every argument
    that does not, and a key given twice with two values, is refused in one ConfigError."""
    base = OmegaConf.create(defaults)
    OmegaConf.set_struct(base, True)
    try:
        conf = OmegaConf.merge(base, presets or {})
    except (ConfigKeyError, ValidationError) as e:
        raise ConfigError(
            f"config: {e.msg.splitlines()[0]}; known keys: {', '.join(k for k, _ in _keys(base))}"
        ) from None
    problems, known = _apply(conf, argv)
    if problems:
        raise ConfigError(_refusal(problems, known))
    return resolve_paths(conf)


def _apply(conf: DictConfig, argv: list[str]) -> tuple[list[str], list[str]]:
    """Set every good argument in `conf`; the problems of the others, and the known keys
    when one names no key."""
    leaves = dict(_keys(OmegaConf.to_container(conf)))
    sections = {".".join(k.split(".")[:n]) for k in leaves for n in range(1, k.count(".") + 1)}
    bad = [a for a in argv if not isinstance(a, str) or "=" not in a or a.startswith("=")]
    problems = [f"arguments {bad} are not key=value overrides, e.g. pairing.k=3 (see --help)"] if bad else []
    unknown, given = False, {}
    for arg in (a for a in argv if a not in bad):
        try:
            for key, value in _override(arg, leaves, sections):
                if key in given and given[key] != value:
                    raise ConfigError(
                        f"{_named(arg)}: {key} is given twice, {_show_value(given[key])} and "
                        f"{_show_value(value)}; give it once"
                    )
                given[key] = value
                OmegaConf.update(conf, key, value, merge=True)
        except ConfigError as e:
            problems.append(str(e))
            unknown |= isinstance(e, _UnknownKey)
    return problems + _unresolved(conf, given, leaves), list(leaves) if unknown else []


def _refusal(problems: list[str], known: list[str]) -> str:
    """One problem on one line, several one per line; after an unknown key, the known ones."""
    lines = problems + ([f"known keys: {', '.join(known)}"] if known else [])
    return "config: " + ("; ".join(lines) if len(problems) == 1 else f"{len(problems)} problems\n" + "\n".join(lines))


def _override(arg: str, leaves: dict, sections: set) -> list[tuple[str, object]]:
    """The (key, value) pairs that `key=value` sets, each checked against its default."""
    if _undecodable(arg):
        raise ConfigError(f"{arg!r}: holds bytes that are not UTF-8 (as the shell passed them); give it as UTF-8 text")
    arg, (key, text) = _named(arg), arg.split("=", 1)
    _check_key(arg, key, leaves, sections)
    value = _value(arg, key, text)
    if key not in sections:
        return [(key, _checked(arg, key, leaves[key], value, text))]
    if not isinstance(value, dict):
        example = next(k for k in leaves if k.startswith(key + "."))
        raise ConfigError(
            f"{arg}: {key} is a section of keys, not a value; set one of them, e.g. {example}={_show(leaves[example])}"
        )
    pairs = [(f"{key}.{k}", v) for k, v in _keys(value)]
    for k, _ in pairs:
        _check_key(arg, k, leaves, sections)
    return [(k, _checked(arg, k, leaves[k], v)) for k, v in pairs if k not in sections]


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


def _checked(arg: str, key: str, default, value, text: str | None = None):
    """`value` for a key whose default is `default` (text as written, for a text key), or
    the ConfigError saying what the key takes."""
    name = key.rsplit(".", 1)[-1]
    textual = isinstance(default, str) or name in TEXT_KEYS
    if isinstance(value, str) and "${" in value:  # an interpolation: checked once resolved
        return value
    if textual and text is not None and isinstance(value, (bool, int, float)):
        return text.strip()
    if value is None and (
        name in OPTIONAL_KEYS | INTEGER_KEYS or textual and not (name in PATH_KEYS and default is not None)
    ):
        return None
    like = 0 if name in INTEGER_KEYS else default  # a value of the kind the key takes
    if not (isinstance(value, str) if textual else _fits(like, value)):
        kind = "a path or URI" if name in PATH_KEYS else "text" if textual else _kind(like)
        raise ConfigError(f"{arg}: {key} takes {kind} (default {_show(default)}), not {_show_value(value)}")
    return value


def _fits(default, value) -> bool:
    """Whether `value` is of the kind of `default` (None: any)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if isinstance(default, float):
        return (isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63) or (
            isinstance(value, float) and math.isfinite(value)
        )
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        alike = len({type(d) for d in default}) == 1
        return isinstance(value, list) and (not alike or all(_fits(default[0], v) for v in value))
    return True


def _kind(default) -> str:
    if isinstance(default, list):
        return f"a list like {_show(default)}"
    return {bool: "true or false", int: "an integer", float: "a finite number"}.get(type(default), "a value")


def _unresolved(conf: DictConfig, given: dict, leaves: dict) -> list[str]:
    """The given interpolations that do not resolve, or not to a value of their key's kind."""
    problems = []
    for key, value in given.items():
        if not (isinstance(value, str) and "${" in value):
            continue
        arg = _named(f"{key}={value}")
        try:
            resolved = OmegaConf.select(conf, key, throw_on_resolution_failure=True)
            resolved = OmegaConf.to_container(resolved) if OmegaConf.is_config(resolved) else resolved
            _checked(arg, key, leaves[key], resolved)
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


def known_keys(values: dict, defaults: dict) -> dict:
    """`values` without the keys `defaults` no longer has: the config of a run made by an older
    labelgen (e.g. labels.min_confidence, now labels.keep), taken as the base of a new one."""
    return {
        k: known_keys(v, defaults[k]) if isinstance(v, dict) and isinstance(defaults[k], dict) else v
        for k, v in values.items()
        if k in defaults
    }


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


def _walk_literal(module, node: ast.Dict, value: dict, comments: dict[int, str], out: dict, spreads: list):
    for key, child in zip(node.keys, node.values):
        if key is None:  # **other: its keys' comments, unless this literal writes the key itself
            written = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            spreads.append((value, _named_object(module, child), written))
        elif isinstance(key, ast.Constant) and key.value in value:
            sub = value[key.value]
            if isinstance(child, ast.Dict) and isinstance(sub, dict):
                _walk_literal(module, child, sub, comments, out, spreads)
            elif child.end_lineno in comments:
                out.setdefault(id(value), {})[key.value] = comments[child.end_lineno]


def _named_object(module, node: ast.expr):
    """What a name (NAME or a.b.NAME) in a module's source is bound to, or None."""
    if isinstance(node, ast.Name):
        return getattr(module, node.id, None)
    if isinstance(node, ast.Attribute):
        return getattr(_named_object(module, node.value), node.attr, None)
    return None


def _comments() -> dict[int, dict[str, str]]:
    """id(dict) -> key -> comment, for the module-level dict literals of this project's
    loaded modules (the defaults of every stage), and the dicts they spread into others."""
    out, spreads = {}, []
    for module in list(sys.modules.values()):
        name = getattr(getattr(module, "__spec__", None), "name", None) or module.__name__
        filename = getattr(module, "__file__", None) or ""
        if name.split(".")[0] not in PACKAGES or not filename.endswith(".py"):
            continue
        tree, comments = _source_comments(filename)
        for stmt in tree.body:
            if (
                isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Dict)
                and isinstance(stmt.targets[0], ast.Name)
            ):
                value = getattr(module, stmt.targets[0].id, None)
                if isinstance(value, dict):
                    _walk_literal(module, stmt.value, value, comments, out, spreads)
    for value, spread, written in spreads:
        inherited = {k: v for k, v in out.get(id(spread), {}).items() if k not in written}
        out[id(value)] = {**inherited, **out.get(id(value), {})}
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
    return "\n".join(
        f"  {key:{width}s}  {note}".rstrip() if len(key) <= width else f"  {key}\n  {'':{width}s}  {note}".rstrip()
        for key, note in rows
    )


def module_doc(obj) -> str:
    """The docstring of the module that defines `obj` (a function or a module)."""
    module = obj if inspect.ismodule(obj) else sys.modules[obj.__module__]
    return inspect.cleandoc(module.__doc__ or "")
