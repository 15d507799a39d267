"""Loading and validating the image manifest (Parquet or CSV, local or s3://)."""

import io as _io
import math
import posixpath

import pandas as pd

from .io import is_remote, read_bytes, resolve

REQUIRED = {"image_id": "string", "uri": "string", "category": "string"}
OPTIONAL = {"azimuth": "float", "elevation": "float", "theta": "float", "mask_uri": "string", "split": "string"}


class ManifestError(ValueError):
    """Raised before any work starts; lists every problem found, one per line."""


def read_manifest(uri: str) -> pd.DataFrame:
    """Read, validate and resolve a manifest; relative URIs are taken from its folder."""
    suffix = uri.lower().rsplit(".", 1)[-1]
    if suffix not in ("parquet", "csv"):
        raise ManifestError(f"manifest {uri}: unknown format '.{suffix}'; use .parquet or .csv")
    try:
        data = read_bytes(uri)
    except (FileNotFoundError, OSError) as e:
        raise ManifestError(f"manifest {uri}: cannot be read ({e}); check the path") from e
    if suffix == "parquet":
        df = pd.read_parquet(_io.BytesIO(data))
    else:
        df = pd.read_csv(_io.BytesIO(data), dtype={"image_id": str, "category": str})
    df = validate(df, source=uri)
    base = posixpath.dirname(uri) if is_remote(uri) else posixpath.dirname(posixpath.abspath(uri))
    df["uri"] = _objects(resolve(u, base) for u in df["uri"])
    for col in ("mask_uri", "truth_uri"):  # truth_uri: the part truth of a rendered collection
        if col in df.columns:
            df[col] = _objects(None if _is_missing(m) else resolve(m, base) for m in df[col])
    return df


def _objects(values) -> pd.Series:
    """A column that keeps None as None (pandas would turn it into NaN in a str column)."""
    return pd.Series(list(values), dtype=object)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def validate(df: pd.DataFrame, source: str = "manifest", max_errors: int = 20) -> pd.DataFrame:
    """Check columns, types and ids; return a copy with optional columns filled."""
    errors = []
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{source}: missing column(s) {missing}; a manifest needs "
            f"{list(REQUIRED)} and may have {list(OPTIONAL)}"
        )
    df = df.reset_index(drop=True).copy()
    for col in OPTIONAL:
        if col not in df.columns:
            df[col] = None
    for col in list(REQUIRED) + ["mask_uri", "split"]:
        for i, v in enumerate(df[col]):
            if _is_missing(v):
                if col in REQUIRED:
                    errors.append(f"row {i}, column '{col}': empty; every image needs a {col}")
            elif not isinstance(v, str):
                errors.append(f"row {i}, column '{col}': {v!r} is not a string; quote it")
    for col in ("azimuth", "elevation", "theta"):
        values = pd.to_numeric(df[col], errors="coerce")
        for i, (raw, num) in enumerate(zip(df[col], values)):
            if not _is_missing(raw) and (math.isnan(num) or math.isinf(num)):
                errors.append(
                    f"row {i}, column '{col}': {raw!r} is not a finite number of degrees; "
                    "give a number or leave it empty"
                )
        df[col] = values.astype("float64")
    dup = df["image_id"][df["image_id"].duplicated(keep="first")]
    for i, v in dup.items():
        first = int(df.index[df["image_id"] == v][0])
        errors.append(f"row {i}, column 'image_id': '{v}' repeats row {first}; ids must be unique")
    if errors:
        more = f"\n... and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise ManifestError(f"{source}: {len(errors)} problem(s)\n" + "\n".join(errors[:max_errors]) + more)
    for col in ("mask_uri", "split"):  # None, not NaN, for "not given"
        df[col] = _objects(None if _is_missing(v) else v for v in df[col])
    return df
