"""Loading and validating the image manifest (Parquet or CSV, local or s3://).

A manifest is checked whole before any work: one bad row refuses it, and the refusal
lists every problem (the first `max_errors` in words, then how many more), one per line,
naming the row and column, what is wrong and what to do. The checks are column
operations, so a manifest of a million rows takes seconds. What only opening an image
shows (a missing or broken file, no pose for its category's pairing) is not refused
here: the run sets that image aside in bad_inputs, with the reason, and labels the rest.

The rules: image_id, uri and category are non-empty text without control characters,
and ids are unique; a category names folders of the store, so it holds no '/' or '\\'
and has at most 200 bytes; a location (uri, mask_uri, truth_uri) is a local path or a
URI of a storage pyarrow reads, of at most 4,096 bytes and names of at most 255;
azimuth, elevation and theta are degrees within -360..360 (NaN or an empty cell: not
given); a homography is 9 finite numbers. In a CSV file, text stays as written (an id
007 stays '007') and only an empty cell is missing.
"""

import codecs
import math
import numbers
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .errors import UsageError
from .io import is_remote, read_bytes, resolve, write_bytes

REQUIRED = {"image_id": "string", "uri": "string", "category": "string"}
OPTIONAL = {
    "azimuth": "float",
    "elevation": "float",
    "theta": "float",
    "mask_uri": "string",
    "split": "string",
    **dict.fromkeys(["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"], "float"),
}
BOX = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]  # the object's box in pixels: the mask and pose estimators' prompt
LOCATIONS = ["uri", "mask_uri", "truth_uri"]  # truth_uri: the part truth of a rendered collection
TEXT = ["image_id", "uri", "category", "mask_uri", "split", "truth_uri"]
ANGLES = ["azimuth", "elevation", "theta"]
MAX_DEGREES = 360.0
MAX_ERRORS = 20
MAX_PATH, MAX_NAME = 4096, 255  # bytes: the longest path and file name Linux takes
MAX_CATEGORY = 200  # bytes: a category names files of the store (category=<name>.parquet)
SCHEMES = r"^(?:s3|gs|gcs|hdfs|abfss?|file)://"  # the storages pyarrow reads


class ManifestError(UsageError):
    """Raised before any work starts; lists every problem found, one per line."""


@dataclass
class Problems:
    """The problems found, all counted, only the first `limit` put in words: a manifest of
    a million bad rows costs twenty messages."""

    limit: int = MAX_ERRORS
    count: int = 0
    lines: list[str] = field(default_factory=list)

    def rows(self, bad, say: Callable[[int], str]):
        """A problem for each row where the mask `bad` is true, worded by say(row)."""
        rows = np.flatnonzero(np.asarray(bad, dtype=bool))
        self.count += len(rows)
        self.lines += [say(int(i)) for i in rows[: max(self.limit - len(self.lines), 0)]]

    def one(self, say: Callable[[], str]):
        self.count += 1
        if len(self.lines) < self.limit:
            self.lines.append(say())

    def refuse(self, source: str):
        """Raise a ManifestError that lists them, if there are any."""
        if self.count:
            more = f"\n... and {self.count - len(self.lines)} more" if self.count > len(self.lines) else ""
            raise ManifestError(f"{source}: {self.count} problem(s)\n" + "\n".join(self.lines) + more)


def read_manifest(uri: str) -> pd.DataFrame:
    """Read, validate and resolve a manifest; relative URIs are taken from its folder."""
    parse = _parquet if _format(uri) == ".parquet" else _csv
    df = _checked(parse(uri, _read(uri)), uri, MAX_ERRORS)
    base = (
        posixpath.dirname(uri) if is_remote(uri) else posixpath.dirname(posixpath.abspath(uri.removeprefix("file://")))
    )
    for col in LOCATIONS:
        if col in df.columns:
            df[col] = _resolved(df[col], base)
    return _with_objects(df)


def write_manifest(df: pd.DataFrame, uri: str) -> str:
    """Write a manifest as Parquet so that it appears whole or not at all: a collection
    writes it last, so that its presence means the collection is complete."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
    write_bytes(uri, sink.getvalue().to_pybytes())
    return uri


def validate(df: pd.DataFrame, source: str = "manifest", max_errors: int = MAX_ERRORS) -> pd.DataFrame:
    """Check columns, types and ids; return the rows with text as strings, angles as float64
    degrees and the optional columns filled (None or NaN: not given)."""
    return _with_objects(_checked(df, source, max_errors))


# ---- the file ----------------------------------------------------------------------


def _format(uri) -> str:
    """'.parquet' or '.csv', from the name; a name no storage can open is refused here."""
    if not isinstance(uri, str):
        raise ManifestError(f"manifest {uri!r}: not a path; give the path or URI of a .parquet or .csv file")
    if _undecodable(uri):
        raise ManifestError(f"manifest {uri!r}: the name holds bytes that are not UTF-8; rename the file")
    for rule, what in LOCATION_RULES:
        if rule(pa.array([uri]))[0]:
            raise ManifestError(f"manifest {_show(uri)} {what}")
    ext = posixpath.splitext(uri)[1].lower()
    if ext not in (".parquet", ".csv"):
        raise ManifestError(
            f"manifest {uri}: {f'unknown format {ext!r}' if ext else 'no suffix to tell its format'}; "
            "use .parquet or .csv"
        )
    return ext


def _read(uri: str) -> bytes:
    try:
        return read_bytes(uri)
    except (OSError, ValueError) as e:  # pyarrow: no such file, a folder, a URI it cannot open
        raise ManifestError(f"manifest {uri}: cannot be read ({e}); check the path") from e


def _parquet(uri: str, data: bytes) -> pd.DataFrame:
    try:
        return pq.ParquetFile(pa.BufferReader(data)).read().to_pandas()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ManifestError(
            f"manifest {uri}: not a Parquet file pyarrow can read ({e}); write it with "
            "pandas.DataFrame.to_parquet or pyarrow.parquet.write_table"
        ) from None


def _csv(uri: str, data: bytes) -> pd.DataFrame:
    """The rows of a CSV file, every column as text (an id 007 stays '007'; validate reads
    the angles as numbers), only an empty cell missing. A line that is not UTF-8, or a row
    whose fields do not match the header, is a problem named by its line."""
    if not data or data.isspace():
        raise ManifestError(
            f"manifest {uri}: empty file; a CSV manifest starts with a header line, e.g. image_id,uri,category"
        )
    problems = Problems()
    if not _is_utf8(data):
        for line, raw in _not_utf8(data):
            problems.one(lambda: f"line {line}: {_show(raw)} is not UTF-8; save the manifest as UTF-8 text")
        problems.refuse(uri)

    def ragged(row) -> str:
        problems.one(
            lambda: (
                f"line {row.number}: {row.actual_columns} field(s) where the header has "
                f"{row.expected_columns}; quote values that hold commas or quotes"
            )
        )
        return "skip"

    read = pcsv.ReadOptions(use_threads=False)  # one thread: rows come with their line numbers
    try:
        header = pcsv.open_csv(
            pa.BufferReader(data),
            read_options=read,
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip"),
        ).schema.names
        table = pcsv.read_csv(
            pa.BufferReader(data),
            read_options=read,
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=ragged),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True, null_values=[""]
            ),
        )
    except pa.ArrowInvalid as e:
        raise ManifestError(f"manifest {uri}: not a CSV file pyarrow can read ({e}); check the file") from None
    problems.refuse(uri)
    return table.to_pandas()


def _is_utf8(data: bytes) -> bool:
    """Whether the bytes are UTF-8, decoded a megabyte at a time (no copy of the file as text)."""
    if data.isascii():
        return True
    decoder, view = codecs.getincrementaldecoder("utf-8")(), memoryview(data)
    try:
        for start in range(0, len(data), 1 << 20):
            decoder.decode(view[start : start + (1 << 20)])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _not_utf8(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, the bytes) for each line that holds bytes that are not UTF-8."""
    text = data.decode("utf-8", "surrogateescape")  # each such byte becomes a lone surrogate
    line, pos, last = 1, 0, 0
    for m in re.finditer("[\udc80-\udcff]+", text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        if line != last:
            last = line
            yield line, m.group().encode("utf-8", "surrogateescape")


# ---- the rows ----------------------------------------------------------------------


def _checked(df: pd.DataFrame, source: str, max_errors: int) -> pd.DataFrame:
    """The rows with text columns as pandas strings and angles as float64 degrees, once every
    check passed; otherwise a ManifestError with every problem."""
    _check_columns(df, source)
    df = df.reset_index(drop=True)
    problems = Problems(max_errors)
    for col in TEXT:
        if col in df.columns:
            df[col] = _check_text(df[col], col, problems)
    for col in ANGLES:
        df[col] = _check_degrees(df[col], col, problems) if col in df.columns else np.nan
    _check_unique(df["image_id"], problems)
    if any(c in df.columns for c in BOX):
        _check_box(df, problems)
    if "homography" in df.columns:  # kept in the store's images table, as 9 float64
        problems.rows(
            ~df["homography"].map(_is_homography).to_numpy(bool),
            lambda i: (
                f"row {i}, column 'homography': {_show(df['homography'].iloc[i])} is not 9 finite numbers "
                "(a 3x3 homography, row by row); fix it or leave it empty"
            ),
        )
    problems.refuse(source)
    return df


def _check_columns(df: pd.DataFrame, source: str):
    """What makes the rows unreadable: columns missing, given twice or on several header rows; no rows."""
    if df.columns.nlevels > 1:
        raise ManifestError(
            f"{source}: its columns have {df.columns.nlevels} header rows; a manifest has one, with {list(REQUIRED)}"
        )
    twice = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if twice:
        raise ManifestError(f"{source}: column(s) {twice} given more than once; give each column once")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{source}: missing column(s) {missing}; a manifest needs {list(REQUIRED)} and may have {list(OPTIONAL)}"
        )
    if not len(df):
        raise ManifestError(f"{source}: no rows; a manifest lists the images to label, one per row")


def _check_text(col: pd.Series, name: str, problems: Problems) -> pd.Series:
    """The column as pandas strings (missing where not text); an empty optional value is
    one not given."""
    text, other, undecodable = _as_text(col)
    problems.rows(
        other, lambda i: f"row {i}, column '{name}': {_show(col.iloc[i])} is not a string; store the column as text"
    )
    problems.rows(
        undecodable,
        lambda i: (
            f"row {i}, column '{name}': {_show(col.iloc[i])} holds bytes that are not UTF-8; give it as UTF-8 text"
        ),
    )
    empty = _mask(pc.equal(text, ""))
    if name in REQUIRED:
        problems.rows(
            _mask(pc.is_null(text)) & ~other & ~undecodable | empty,
            lambda i: f"row {i}, column '{name}': empty; every image needs one",
        )
    elif empty.any():
        text = pc.if_else(empty, pa.scalar(None, text.type), text)
    for rule, what in TEXT_RULES[name]:
        problems.rows(rule(text), lambda i: f"row {i}, column '{name}': {_show(text[i].as_py())} {what}")
    return text.to_pandas()


def _as_text(col: pd.Series) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The column as an Arrow string array, null where it is not text; where it held
    something else (a number, bytes, a list); where text that is not valid Unicode (a name
    decoded with surrogateescape)."""
    none = np.zeros(len(col), dtype=bool)
    if isinstance(col.dtype, pd.StringDtype) and col.dtype.storage == "pyarrow":  # valid UTF-8 by construction
        return _array(col), none, none
    values = col.astype(object)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    other = (
        none
        if kind in ("string", "empty")
        else ~values.map(lambda v: isinstance(v, str) or _is_missing(v)).to_numpy(bool)
    )
    try:
        return pa.array(values.where(~other, None), pa.large_string(), from_pandas=True), other, none
    except UnicodeEncodeError:
        undecodable = values.map(_undecodable).to_numpy(bool)
        return (
            pa.array(values.where(~(other | undecodable), None), pa.large_string(), from_pandas=True),
            other,
            undecodable,
        )


def _array(col: pd.Series) -> pa.Array:
    """A pandas string column as one Arrow array (a CSV file's comes in chunks)."""
    a = pa.array(col)
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def _mask(flags) -> np.ndarray:
    """An Arrow boolean array as a numpy mask, null as false."""
    return flags.fill_null(False).to_numpy(zero_copy_only=False)


def _control(text) -> np.ndarray:
    return _mask(pc.match_substring_regex(text, r"[\x00-\x1f\x7f-\x9f]"))


def _slash(text) -> np.ndarray:
    return _mask(pc.match_substring_regex(text, r"[/\\]"))


def _bytes(text) -> np.ndarray:
    """The UTF-8 length of each value (0 where missing)."""
    return pc.binary_length(text).fill_null(0).to_numpy()


def _long_category(text) -> np.ndarray:
    return _bytes(text) > MAX_CATEGORY


def _foreign(text) -> np.ndarray:
    """A URI (io.is_remote: '://' anywhere) of a storage pyarrow does not read."""
    return _mask(pc.match_substring(text, "://")) & ~_mask(pc.match_substring_regex(text, SCHEMES))


def _long_path(text) -> np.ndarray:
    return _bytes(text) > MAX_PATH


def _long_name(text) -> np.ndarray:
    """A name between slashes of more than MAX_NAME bytes (a byte regex, on the long paths only)."""
    long = _bytes(text) > MAX_NAME
    if long.any():
        names = pc.match_substring_regex(text.filter(long).cast(pa.large_binary()), f"[^/]{{{MAX_NAME + 1},}}")
        long[long] = _mask(names)
    return long


CONTROL_RULE = (_control, "holds a control character (a tab, newline, NUL, ...); remove it")
LOCATION_RULES = [
    CONTROL_RULE,
    (_foreign, "is a URI of a storage labelgen cannot read; give a local path or an s3:// URI"),
    (_long_path, f"is longer than {MAX_PATH:,} bytes, more than any filesystem takes; shorten it"),
    (_long_name, f"holds a name longer than {MAX_NAME} bytes, more than any filesystem takes; shorten it"),
]
TEXT_RULES = {
    "image_id": [CONTROL_RULE],
    "category": [
        CONTROL_RULE,
        (_slash, "holds '/' or '\\', but a category names folders of the store; rename it"),
        (_long_category, f"is longer than {MAX_CATEGORY} bytes, but a category names files of the store; shorten it"),
    ],
    "split": [CONTROL_RULE],
    **dict.fromkeys(LOCATIONS, LOCATION_RULES),
}


def _check_degrees(col: pd.Series, name: str, problems: Problems) -> np.ndarray:
    """The column as float64 degrees, NaN where not given."""
    values, unread = _as_degrees(col)
    problems.rows(
        unread | np.isinf(values),
        lambda i: (
            f"row {i}, column '{name}': {_show(col.iloc[i])} is not a "
            "finite number of degrees; give a number or leave it empty"
        ),
    )
    problems.rows(
        np.isfinite(values) & (np.abs(values) > MAX_DEGREES),
        lambda i: (
            f"row {i}, column '{name}': {_show(col.iloc[i])} is outside -{MAX_DEGREES:g}..{MAX_DEGREES:g} degrees; "
            "give the angle in degrees"
        ),
    )
    return values


def _as_degrees(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 (NaN where not given), and where a cell is no number."""
    none = np.zeros(len(col), dtype=bool)
    if pd.api.types.is_bool_dtype(col.dtype):
        return np.full(len(col), np.nan), col.notna().to_numpy()
    if pd.api.types.is_integer_dtype(col.dtype) or pd.api.types.is_float_dtype(col.dtype):
        return col.to_numpy(dtype="float64", na_value=np.nan), none
    if isinstance(col.dtype, pd.StringDtype) and col.dtype.storage == "pyarrow":
        return _numbers(col)
    values = col.astype(object)  # mixed: numbers, text, and what is neither
    real = values.map(lambda v: isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))).to_numpy(bool)
    text = values.map(lambda v: isinstance(v, str) and not _undecodable(v)).to_numpy(bool)
    out = np.full(len(col), np.nan)
    out[real] = [_float(v) for v in values[real]]
    out[text], unread = _numbers(values[text].astype("str"))
    bad = ~(real | text | values.map(_is_missing).to_numpy(bool))
    bad[text] = unread
    return out, bad


def _numbers(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numbers written as text (NaN: not given): parsed by pyarrow at once, or cell by cell
    by pandas when one is not a number (both read the same numbers)."""
    trimmed = pc.utf8_trim_whitespace(pa.array(text))
    try:
        return pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False), np.zeros(len(text), dtype=bool)
    except pa.ArrowInvalid:
        trimmed = pd.Series(trimmed.to_pandas(), dtype="str")
        values = pd.to_numeric(trimmed, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        said_nan = trimmed.str.lower().str.lstrip("+-").eq("nan").to_numpy(bool)
        return values, trimmed.notna().to_numpy() & np.isnan(values) & ~said_nan


def _check_box(df: pd.DataFrame, problems: Problems):
    """The box columns as float64 pixels: all four or none per row, x1 < x2 and y1 < y2."""
    for col in BOX:
        if col not in df.columns:
            problems.one(lambda col=col: f"column '{col}' is missing: a box takes {BOX}; give all four or none")
            df[col] = np.nan
            continue
        values, unread = _as_degrees(df[col])
        problems.rows(
            unread | np.isinf(values),
            lambda i, col=col: f"row {i}, column '{col}': {_show(df[col].iloc[i])} is not a finite number of pixels",
        )
        df[col] = values
    box = df[BOX].to_numpy(np.float64)
    given = np.isfinite(box)
    problems.rows(given.any(1) & ~given.all(1), lambda i: f"row {i}: a box needs all of {BOX}; give all four or none")
    problems.rows(
        given.all(1) & ((box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])),
        lambda i: f"row {i}: box {box[i].tolist()} is empty; give bbox_x1 < bbox_x2 and bbox_y1 < bbox_y2 in pixels",
    )


def _check_unique(ids: pd.Series, problems: Problems):
    """Each repeated id, with the row it repeats (an empty one is a problem of its own)."""
    a = _array(ids)
    codes = a.dictionary_encode().indices.fill_null(-1).to_numpy()  # the ids numbered as they first appear
    new = codes > np.maximum.accumulate(np.r_[-1, codes[:-1]])
    first = np.flatnonzero(new)
    problems.rows(
        ~new & (codes >= 0) & ~_mask(pc.equal(a, "")),
        lambda i: f"row {i}, column 'image_id': {_show(ids.iloc[i])} repeats row {first[codes[i]]}; ids must be unique",
    )


# ---- cells -------------------------------------------------------------------------


def _is_missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _undecodable(v) -> bool:
    """Text that is not valid Unicode: lone surrogates, what bytes that are not UTF-8
    become when decoded with surrogateescape (file names, command lines)."""
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _float(v) -> float:
    try:
        return float(v)
    except OverflowError:  # an int beyond float64
        return math.inf


def _is_homography(h) -> bool:
    """Not given, or 9 finite numbers: a 3x3 homography row by row, as the store keeps it."""
    if _is_missing(h):
        return True
    if isinstance(h, (str, bytes, dict)):
        return False
    try:
        a = np.asarray(h)
    except (ValueError, TypeError):
        return False
    return a.shape == (9,) and a.dtype.kind in "iuf" and bool(np.isfinite(a).all())


def _show(v, width: int = 80) -> str:
    """A cell as a message quotes it: its repr, cut short (a path of 100,000 characters
    makes no message as long)."""
    text = repr(v.item() if isinstance(v, np.generic) else v)
    return text if len(text) <= width else f"{text[:width]}... ({len(text):,} characters)"


# ---- the result --------------------------------------------------------------------


def _resolved(paths: pd.Series, base: str) -> pd.Series:
    """io.resolve over a column, as Python strings: relative paths joined to `base` at once,
    the few that start with ~ one by one."""
    a = _array(paths)
    kept = pc.or_(
        pc.starts_with(a, "/"), pc.and_(pc.match_substring(a, "://"), pc.invert(pc.starts_with(a, "file://")))
    )
    joined = pc.binary_join_element_wise(
        pa.scalar(base.rstrip("/") + "/", a.type), pc.utf8_trim(a, "/"), pa.scalar("", a.type)
    )
    out = _objects(pc.if_else(kept, a, joined))
    home = _mask(pc.starts_with(a, "~"))
    out[home] = [resolve(p, base) for p in paths[home]]
    return out


def _with_objects(df: pd.DataFrame) -> pd.DataFrame:
    """Locations and splits as Python strings, as the pipeline reads them (optional ones
    filled with None)."""
    for col in ("mask_uri", "split"):
        if col not in df.columns:
            df[col] = None
    for col in [*LOCATIONS, "split"]:
        if col in df.columns and df[col].dtype != object:
            df[col] = _objects(_array(df[col]), repeated=col == "split")
    return df


def _objects(a: pa.Array, repeated: bool = False) -> pd.Series:
    """Python strings, None where null (pandas would make it NaN, which reads as true: `if
    mask_uri:`); `repeated` values (a split) share one object each, not one per row."""
    return pd.Series((a.dictionary_encode() if repeated else a).to_numpy(zero_copy_only=False), dtype=object)
