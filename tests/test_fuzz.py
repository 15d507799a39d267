"""Fuzzed input: generated manifests (CSV, Parquet, in memory) and command-line overrides.

Every bad manifest or argument is refused before any work, by a ManifestError or a
ConfigError that counts every problem and names each (row and column, line, or key);
nothing else is ever raised; a good manifest comes back with every row, its ids and
values intact, and fits the store's images table. The examples are derandomized: the
same ones on every run, so CI cannot flake.
"""

import contextlib
import io
import math
import os
import re
import tempfile
import threading
import time
import typing
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from labelgen import run as run_mod
from labelgen.config import ConfigError, absolute, is_location, kinds, parse_overrides
from labelgen.io import resolve
from labelgen.manifest import ManifestError, read_manifest, validate
from labelgen.store import images_table

FUZZ = dict(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ---- manifests ---------------------------------------------------------------------

TEXT_CHARS = st.characters(blacklist_categories=("Cc", "Cs"))  # no control characters, no lone surrogates
CONTROL = st.sampled_from(["\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\x85"])
words = st.text(TEXT_CHARS, min_size=1, max_size=12)
names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/"), min_size=1, max_size=12
) | st.sampled_from([".", "..", "~", " a b ", "ü" * 127, "n" * 255])
paths = st.builds(
    lambda head, parts: head + "/".join(parts),
    st.sampled_from(["", "", "/", "../", "~/", "s3://bucket/"]),
    st.lists(names, min_size=1, max_size=4),
) | st.just("/".join(["n" * 100] * 40))  # 4,039 bytes
categories = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"), min_size=1, max_size=12
)
numbers = st.floats(-360, 360) | st.integers(-360, 360)
angle_texts = st.sampled_from([" 12 ", "+5", "-0", "1e2", ".5", "5.", "NaN", "nan", "-360", "359.999"])
homographies = st.lists(st.floats(-1e6, 1e6), min_size=9, max_size=9)
SINKS = ("csv", "parquet", "memory")
ANGLES = ("azimuth", "elevation", "theta")


def bads(column: str, row: int, sink: str) -> st.SearchStrategy:
    """Values that make exactly one problem in a cell of `column`, of those the sink can hold."""
    control = CONTROL.map(lambda c: f"x{row}{c}y")
    memory = (
        {  # what only a frame in memory holds: a mixed column
            "image_id": [row, b"id", 1.5, ["a"], f"i\udcff{row}"],
            "uri": [7, b"a.png", "a\udcffb.png"],
            "category": [3],
            "mask_uri": [1.5],
            "split": [2],
            **dict.fromkeys(ANGLES, [True, b"1", [1.0]]),
            "homography": [["a"] * 9, "identity"],
        }[column]
        if sink == "memory"
        else []
    )
    text = {
        "image_id": ["", None],
        "uri": ["", None, "http://host/a.png", "a/" + "é" * 128, "p/" * 2100],
        "category": ["", None, "a/b", "a\\b", "c" * 201],
        "mask_uri": ["ftp://host/m.png", "m/" + "n" * 256],
        "split": [],
    }
    if column in ANGLES:
        values = (
            ["north", "NA", "1,5", "  ", "inf", "-inf", "1e999", "400", "-360.5", "1e308"] if sink != "parquet" else []
        )
        return st.sampled_from(values + ([361.0, -1e308, math.inf] if sink != "csv" else []) + memory)
    if column == "homography":
        return st.sampled_from([[1.0] * 8, [1.0] * 8 + [math.nan]] + memory)
    return st.sampled_from(text[column] + memory) | control if text[column] + memory else control


GOOD = {
    "uri": paths,
    "category": categories,
    "mask_uri": st.none() | st.just("") | paths,
    "split": st.none() | st.just("") | words,
    **dict.fromkeys(ANGLES, st.none() | numbers | st.just(math.nan)),
    "note": st.none() | words,
    "homography": st.none() | homographies,
}


@dataclass
class Manifest:
    sink: str
    columns: dict  # name -> cells, as written
    problems: list = field(default_factory=list)  # (row, column) of each problem
    lines: set = field(default_factory=set)  # CSV lines refused before the cells are read (not UTF-8, ragged)
    refusal: str | None = None  # what refuses the manifest before its rows are checked
    bad_bytes: dict = field(default_factory=dict)  # row -> bytes that are not UTF-8, in its first cell (CSV)
    ragged: set = field(default_factory=set)  # rows written with one field too many (CSV)

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values())))


@st.composite
def manifests(draw, broken: bool) -> Manifest:
    """A manifest of good rows or, if `broken`, with at least one problem of a known kind."""
    sink = draw(st.sampled_from(SINKS))
    n = draw(st.integers(1, 24))
    optional = draw(
        st.sets(st.sampled_from(["mask_uri", "split", *ANGLES, "note"] + (["homography"] if sink != "csv" else [])))
    )
    columns = {"image_id": draw(st.lists(words, min_size=n, max_size=n, unique=True))}
    for col in ["uri", "category", *sorted(optional)]:
        columns[col] = draw(st.lists(GOOD[col], min_size=n, max_size=n))
    if sink == "csv":  # some angles as text; a number given as text is fine
        for col in set(ANGLES) & optional:
            columns[col] = [draw(angle_texts) if draw(st.booleans()) else v for v in columns[col]]
    m = Manifest(sink, columns)
    if broken:
        kind = draw(st.sampled_from(["cells"] * 6 + ["structure"] + (["file"] if sink == "csv" else [])))
        {"cells": break_cells, "structure": break_structure, "file": break_file}[kind](draw, m)
        event(f"{sink}: {kind}")
    return m


def break_cells(draw, m: Manifest):
    """Some cells with one defect each: a bad value, or an id that repeats an earlier one."""
    cells = draw(
        st.sets(
            st.tuples(st.integers(0, m.rows - 1), st.sampled_from(sorted(set(m.columns) - {"note"}))),
            min_size=1,
            max_size=8,
        )
    )
    for row, col in sorted(cells):
        if col == "image_id" and row and draw(st.booleans()):
            m.columns[col][row] = m.columns[col][draw(st.integers(0, row - 1))]
        else:
            m.columns[col][row] = draw(bads(col, row, m.sink))
            m.problems.append((row, col))
    # an id is a problem if it is no good id, and another if it repeats an earlier text id
    m.problems = [p for p in m.problems if p[1] != "image_id"]
    seen = set()
    for row, v in enumerate(m.columns["image_id"]):
        m.problems += [(row, "image_id")] * (int(not good_id(v)) + int(text_id(v) and v in seen))
        if text_id(v):
            seen.add(v)


def text_id(v) -> bool:
    """What ids are compared as: text that is not empty and is valid Unicode."""
    return isinstance(v, str) and v != "" and not re.search("[\ud800-\udfff]", v)


def good_id(v) -> bool:
    """A text id without control characters."""
    return text_id(v) and not re.search("[\x00-\x1f\x7f-\x9f]", v)


def break_structure(draw, m: Manifest):
    """A manifest refused before its rows: a required column missing, one given twice, no rows."""
    how = draw(st.sampled_from(["missing", "twice", "empty"]))
    if how == "missing":
        del m.columns[draw(st.sampled_from(["image_id", "uri", "category"]))]
        m.refusal = r"missing column\(s\)"
    elif how == "twice" and m.sink != "parquet":
        m.columns["uri#2"] = list(m.columns["uri"])  # written as a second 'uri'
        m.refusal = r"column\(s\) \['uri'\] given more than once"
    else:
        m.columns = {c: [] for c in m.columns}
        m.refusal = "no rows"


def break_file(draw, m: Manifest):
    """CSV lines refused before any cell is read: bytes that are not UTF-8, or a field too many."""
    rows = draw(st.sets(st.integers(0, m.rows - 1), min_size=1, max_size=4))
    if draw(st.booleans()):
        m.bad_bytes = {r: draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3\x28", b"\xed\xa0\x80"])) for r in rows}
    else:
        m.ragged = rows


def write_csv(m: Manifest, path: str):
    """The manifest as CSV, every value quoted (None: an empty cell); the lines refused as
    not UTF-8 or ragged, by their number in the file."""
    quote = lambda v: "" if v is None else '"' + str(v).replace('"', '""') + '"'  # noqa: E731
    header = [c.split("#")[0] for c in m.columns]
    out, line = [",".join(header).encode() + b"\n"], 2
    for row in range(m.rows):
        fields = [quote(m.columns[c][row]).encode() for c in m.columns]
        if row in m.bad_bytes:
            fields[0] = b'"' + m.bad_bytes[row] + fields[0].strip(b'"') + b'"'
            m.lines.add(line)
        if row in m.ragged:
            fields.append(b'"extra"')
            m.lines.add(line)
        text = b",".join(fields) + b"\n"
        line += text.count(b"\n")
        out.append(text)
    with open(path, "wb") as f:
        f.write(b"".join(out))


def write_parquet(m: Manifest, path: str):
    types = {"homography": pa.list_(pa.float64()), **dict.fromkeys(ANGLES, pa.float64())}
    pq.write_table(pa.table({c: pa.array(v, types.get(c, pa.string())) for c, v in m.columns.items()}), path)


def load(m: Manifest, folder: str) -> tuple[pd.DataFrame, str | None]:
    """What the manifest reads as, and the folder its relative paths are taken from."""
    if m.sink == "memory":
        frame = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in m.columns.items()})
        return validate(frame.rename(columns=lambda c: c.split("#")[0])), None
    path = os.path.join(folder, f"manifest.{m.sink}")
    (write_csv if m.sink == "csv" else write_parquet)(m, path)
    return read_manifest(path), folder


def problem_lines(message: str) -> tuple[int, list[str]]:
    head, *lines = message.splitlines()
    count = int(re.search(r": (\d+) problem\(s\)$", head).group(1))
    assert len(lines) == min(count, 20) + (count > 20), message
    if count > 20:
        assert lines.pop() == f"... and {count - 20} more"
    return count, lines


def check_refusal(m: Manifest, e: ManifestError):
    """The refusal counts every problem and names each one's row and column, or line."""
    message = str(e)
    if m.refusal:
        assert re.search(m.refusal, message), (m.refusal, message)
        return
    count, lines = problem_lines(message)
    if m.lines:
        assert count == len(m.lines), (sorted(m.lines), message)
        assert {int(re.match(r"line (\d+): ", ln).group(1)) for ln in lines} <= m.lines, message
        return
    assert count == len(m.problems), (sorted(m.problems), message)
    named = [(int(r), c) for r, c in (re.match(r"row (\d+), column '(\w+)': ", ln).groups() for ln in lines)]
    assert set(named) <= set(m.problems), (sorted(m.problems), message)


def expected_angle(v) -> float:
    if v is None:
        return math.nan
    return float(v.strip()) if isinstance(v, str) else float(v)


def check_intact(m: Manifest, df: pd.DataFrame, folder: str | None):
    """Every row, in order, with its ids and values as given (paths resolved), and the rows
    fit the store's images table."""
    base = folder and os.path.abspath(folder)
    where = (lambda p: resolve(p, base)) if base else (lambda p: p)  # noqa: E731
    assert len(df) == m.rows
    assert df["image_id"].tolist() == m.columns["image_id"]
    assert df["category"].tolist() == m.columns["category"]
    assert df["uri"].tolist() == [where(p) for p in m.columns["uri"]]
    for col in ("mask_uri", "split"):
        given = m.columns.get(col, [None] * m.rows)
        assert df[col].tolist() == [None if v in (None, "") else where(v) if col == "mask_uri" else v for v in given]
    for col in set(ANGLES) & set(m.columns):
        assert np.array_equal(df[col].to_numpy(), [expected_angle(v) for v in m.columns[col]], equal_nan=True), col
    if "note" in m.columns:
        assert [None if pd.isna(v) else v for v in df["note"]] == m.columns["note"]
    if "homography" in m.columns:
        assert [None if h is None else list(h) for h in df["homography"]] == m.columns["homography"]
    assert images_table(df.assign(run_id="fuzz")).num_rows == m.rows


def read_or_refuse(m: Manifest):
    with tempfile.TemporaryDirectory() as folder:
        try:
            df, base = load(m, folder)
        except ManifestError as e:
            return e, None, None
        return None, df, base


@settings(max_examples=300, **FUZZ)
@given(manifests(broken=False))
def test_a_good_manifest_comes_back_with_every_row_intact(m):
    error, df, base = read_or_refuse(m)
    assert error is None, str(error)
    check_intact(m, df, base)


@settings(max_examples=400, **FUZZ)
@given(manifests(broken=True))
@example(Manifest("csv", {"image_id": ["a", "b"], "uri": ["a.png", "b.png"], "category": ["c", "c"]}, ragged={0}))
def test_a_bad_manifest_is_refused_with_every_problem_counted_and_named(m):
    error, df, _ = read_or_refuse(m)
    assert error is not None, f"accepted: {m}"
    check_refusal(m, error)


@settings(max_examples=150, **FUZZ)
@given(st.text(max_size=12) | angle_texts | st.sampled_from(["inf", "1e999", "400", "٣", "1_0", "\u00a012"]))
def test_a_number_reads_the_same_beside_a_good_or_a_bad_one(text):
    """pyarrow parses a column at once, pandas cell by cell once one is no number: same verdicts."""

    def refused(column):
        try:
            validate(
                pd.DataFrame(
                    {"image_id": ["a", "b"], "uri": "u", "category": "c", "azimuth": pd.Series(column, dtype="str")}
                )
            )
        except ManifestError as e:
            return "row 0" in str(e)
        return False

    assert refused([text, "12"]) == refused([text, "north"])


# ---- command-line overrides ---------------------------------------------------------


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


LEAVES = kinds(run_mod.default_conf)  # key -> its declared type
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in LEAVES if "." in k})


def optional(kind) -> tuple[object, bool]:
    """`X | None` as (X, True), any other type as (it, False)."""
    args = typing.get_args(kind)
    return (next(a for a in args if a is not type(None)), True) if type(None) in args else (kind, False)


NULLS = {"null", "Null", "NULL", "~"}
BOOLS = {
    "yes",
    "Yes",
    "YES",
    "no",
    "No",
    "NO",
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
    "on",
    "On",
    "ON",
    "off",
    "Off",
    "OFF",
}  # what YAML reads as booleans
plain = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,12}", fullmatch=True).filter(lambda t: t not in NULLS)


@dataclass(frozen=True)
class Arg:
    text: str
    key: str | None = None
    expected: object = None  # the value it sets, if good
    good: bool = True


def value_for(kind) -> st.SearchStrategy:
    """A good `key=value` for a key of type `kind`: (text, the value it gives)."""
    inner, nullable = optional(kind)
    if inner is bool:
        values = st.sampled_from([("true", True), ("false", False), ("True", True), ("off", False)])
    elif inner is int:
        values = st.integers(-(10**9), 10**9).map(lambda v: (str(v), v))
    elif inner is float:
        values = st.floats(-1e6, 1e6).map(lambda v: (repr(v), v)) | st.integers(-99, 99).map(lambda v: (str(v), v))
    elif typing.get_origin(inner) is list and typing.get_args(inner) == (str,):
        values = st.lists(plain.filter(lambda t: t not in BOOLS), max_size=3).map(
            lambda vs: ("[" + ",".join(vs) + "]", vs)
        )
    elif typing.get_origin(inner) is list:
        values = st.lists(st.integers(-90, 90).map(typing.get_args(inner)[0]), max_size=3).map(
            lambda vs: ("[" + ",".join(map(str, vs)) + "]", vs)
        )
    else:
        texts = plain | st.integers(0, 10**6).map(str) | st.sampled_from(["off", "yes", "1e5", "007"])
        values = texts.map(lambda t: (t, absolute(t) if is_location(inner) else t))
    return values | st.just(("null", None)) if nullable else values


@st.composite
def good_args(draw) -> Arg:
    key = draw(st.sampled_from(sorted(LEAVES)))
    text, value = draw(value_for(LEAVES[key]))
    return Arg(f"{key}={text}", key, value)


def bad_value(kind) -> st.SearchStrategy:
    inner, nullable = optional(kind)
    empty = [] if nullable else [""]  # nothing: null
    if inner is bool:
        return st.sampled_from(["maybe", "1", "[true]", *empty])
    if inner is int:
        too_big = "99999999999999999999"
        return st.sampled_from(["abc", "1.5", "[1]", "true", "{a: 1}", too_big, "${data.builtin}", *empty])
    if inner is float:
        return st.sampled_from(["abc", ".inf", ".nan", "[1.0]", "true", "1e999", *empty])
    if typing.get_origin(inner) is list:
        return st.sampled_from(["5", "abc", "{a: 1}"] + (["[1, 2]"] if typing.get_args(inner) == (str,) else ["[a]"]))
    return st.sampled_from(["[a, b]", "{a: 1}", *empty, *(["null"] if empty else [])])


@st.composite
def bad_args(draw) -> Arg:
    how = draw(
        st.sampled_from(["unknown", "no =", "into a value", "section", "type", "yaml", "interpolation", "bytes"])
    )
    key = draw(st.sampled_from(sorted(LEAVES)))
    if how == "unknown":
        key = draw(
            st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True).filter(
                lambda k: k not in LEAVES and k not in SECTIONS and not any(k.startswith(f"{leaf}.") for leaf in LEAVES)
            )
        )
        return Arg(f"{key}={draw(st.text(max_size=5))}", key, good=False)
    if how == "no =":
        return Arg(draw(st.text(st.characters(blacklist_characters="="), max_size=10)), good=False)
    if how == "into a value":
        return Arg(f"{key}.x=1", key, good=False)
    if how == "section":
        section = draw(st.sampled_from(SECTIONS))
        return Arg(f"{section}={draw(st.sampled_from(['3', '[]', 'null', 'abc']))}", section, good=False)
    if how == "type":
        return Arg(f"{key}={draw(bad_value(LEAVES[key]))}", key, good=False)
    if how == "yaml":
        return Arg(
            f"{key}={draw(st.sampled_from(['[', '{', chr(39) + 'a', '!!python/object:os.system', '*a', '%x']))}",
            key,
            good=False,
        )
    if how == "interpolation":
        return Arg(
            f"{key}={draw(st.sampled_from(['${nope_xyz}', '${oc.env:LABELGEN_FUZZ_UNSET}', '${']))}", key, good=False
        )
    return Arg(draw(st.sampled_from([f"{key}=\udcff", "\udcff=1", f"{key}=a\udc80"])), key, good=False)


def named(arg: str) -> str:
    return arg if arg.isprintable() else repr(arg)


def given_once(args: list[Arg]) -> list[Arg]:
    """A key given twice with two values is a problem of the second."""
    seen, out = {}, []
    for a in args:
        if a.good and a.key in seen and seen[a.key] != a.expected:
            a = Arg(a.text, a.key, good=False)
        elif a.good:
            seen[a.key] = a.expected
        out.append(a)
    return out


@settings(max_examples=400, **FUZZ)
@given(st.lists(good_args(), max_size=6), st.lists(bad_args(), max_size=3), st.randoms())
@example(
    [Arg("labels.radius=1.5", "labels.radius", 1.5)], [Arg("labels.radiuss=2", "labels.radiuss", good=False)], None
)
def test_overrides_are_applied_or_every_bad_one_refused_by_name(good, bad, rnd):
    args = good + bad
    if rnd is not None:
        rnd.shuffle(args)
    args = given_once(args)
    argv = [a.text for a in args]
    try:
        conf = parse_overrides(run_mod.default_conf, argv, run_mod.presets(argv))
    except ConfigError as e:
        message = str(e)
        wrong = [a for a in args if not a.good]
        assert wrong, message
        for a in wrong:
            assert (
                f"{named(a.text)}: " if "=" in a.text and not a.text.startswith("=") else repr(a.text)
            ) in message, (a, message)
        return
    assert all(a.good for a in args), argv
    values = flat(OmegaConf.to_container(conf, resolve=True))
    for a in args:
        assert values[a.key] == a.expected, (a, argv)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["pairing.k=abc"],
            "pairing.k=abc: pairing.k takes an integer (default 4), not 'abc'",
        ),  # was accepted: a crash in pairing
        (["pairing.k=[1,2]"], "pairing.k takes an integer"),
        (["pairing.bin_deg=.inf"], "takes a finite number"),
        (["new_only=maybe"], "new_only takes true or false"),
        (["store="], "store takes a path or URI"),  # was None: the store's constructor failed
        (["pairing=3"], "pairing is a section of keys, not a value; set one of them, e.g. pairing.k=4"),
        (["labels=[]"], "labels is a section of keys"),  # was TypeError: Cannot merge incompatible container types
        (["pairing.k.x=3"], "pairing.k is a value, not a section"),  # was accepted
        (["store=${nope}"], "the interpolation does not resolve"),  # was InterpolationKeyError
        (["pairing.k=["], "'[' cannot be read as a value"),  # was yaml ParserError
        (["pairing.k=!!python/object:os.system"], "cannot be read as a value"),  # was ConstructorError
        (["pairing.k=\udcff"], r"'pairing.k=\\udcff': holds bytes that are not UTF-8"),  # was UnicodeEncodeError
        (
            ["pairing.k=1", "pairing.k=2"],
            "pairing.k=2: pairing.k is given twice, 1 and 2; give it once",
        ),  # the last won
        (["pairing.k=abc", "labels.radiuss=2", "x"], r"config: 3 problems\narguments \['x'\] are not key=value"),
    ],
)
def test_bad_overrides_found_by_fuzzing_are_refused_by_name(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message) if "\\" not in message else message):
        parse_overrides(run_mod.default_conf, argv, run_mod.presets(argv))


def test_text_keys_keep_a_number_as_written():
    conf = parse_overrides(run_mod.default_conf, ["run_id=007", "labels.sphere=off", "store=2024"])
    assert (
        conf.run_id == "007" and conf.labels.sphere == "off" and conf.store == os.path.abspath("2024")
    )  # were 7, False, 2024


@settings(max_examples=60, **FUZZ)
@given(
    manifests(broken=True).filter(lambda m: m.sink != "memory"),
    st.lists(
        (good_args() | bad_args()).filter(lambda a: a.text not in ("-h", "--help", "-v", "--verbose")), max_size=3
    ),
)
def test_the_command_line_refuses_a_bad_manifest_or_config_before_any_work(m, args):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"manifest.{m.sink}")
        (write_csv if m.sink == "csv" else write_parquet)(m, path)
        store = os.path.join(folder, "store")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = run_mod.main(
                [a.text for a in args if a.key not in ("data.manifest", "store")]
                + [f"data.manifest={path}", f"store={store}"]
            )
        assert code == 2 and err.getvalue().startswith("error: "), err.getvalue()
        assert not os.path.exists(store)


# ---- a million rows ---------------------------------------------------------------


def peak_growth(fn) -> tuple[object, int]:
    """fn()'s result and how far the process's resident memory rose above where it started."""
    import psutil

    proc = psutil.Process()
    start = peak = proc.memory_info().rss
    done = threading.Event()

    def watch():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        return fn(), peak - start
    finally:
        done.set()
        watcher.join()


def test_a_million_rows_are_read_whole_in_memory_bounded_by_their_size(tmp_path):
    n = 1_000_000
    ids = np.char.add("img", np.arange(n).astype(str))
    table = pa.table(
        {
            "image_id": ids,
            "uri": np.char.add("images/", np.char.add(ids, ".png")),
            "category": np.char.add("cat_", (np.arange(n) % 100).astype(str)),
            "azimuth": np.linspace(-180, 180, n),
            "split": np.where(np.arange(n) % 10, "train", "val"),
        }
    )
    path = tmp_path / "manifest.csv"
    pcsv.write_csv(table, str(path))
    del table
    df, growth = peak_growth(lambda: read_manifest(str(path)))
    assert len(df) == n and (df["image_id"].to_numpy() == ids).all()
    assert df["uri"].iloc[-1] == f"{tmp_path}/images/img{n - 1}.png" and df["azimuth"].iloc[-1] == 180.0
    assert growth < 12 * path.stat().st_size, (
        f"{growth / 2**20:.0f} MiB for a {path.stat().st_size / 2**20:.0f} MiB manifest"
    )
