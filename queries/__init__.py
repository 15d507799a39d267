"""SQL reports over the label store: one .sql file per report, run by `python -m queries`.

A report's leading comment lines describe it; a line `-- plot: KIND key=value ...`
says how `plot=` draws it (see `queries.plot`). Reports read parameters with
`getvariable('name')`, set by `param=[name=value]`.
"""

import re
from contextlib import contextmanager
from importlib import resources

import duckdb
import pandas as pd

from labelgen.errors import UsageError
from labelgen.store import LabelStore
from labelgen.store.check import explain

from . import functions


def report_names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files(__package__).iterdir() if p.name.endswith(".sql"))


def report_sql(name: str) -> str:
    path = resources.files(__package__) / f"{name}.sql"
    if not re.fullmatch(r"\w+", name) or not path.is_file():
        raise UsageError(f"no report '{name}'; reports: {', '.join(report_names())}, or `sql \"SELECT ...\"`")
    return path.read_text()


def header(sql: str) -> dict[str, str]:
    """The report's description and plot spec, from its leading comments."""
    lines = [line[2:].strip() for line in sql.splitlines() if line.startswith("--")]
    plot = next((line[len("plot:") :].strip() for line in lines if line.startswith("plot:")), "")
    about = " ".join(line for line in lines if not line.startswith("plot:"))
    return {"about": about, "plot": plot}


def run_sql(
    store_uri: str, sql: str, params: dict[str, str] | None = None, catalog: str | None = None, at: int | None = None
) -> pd.DataFrame:
    """Run SQL on a read-only connection to the store (committed runs only), at its latest
    snapshot or at snapshot `at`, with the truth functions (`queries.functions`) where it calls them."""
    with reading(LabelStore(store_uri, catalog), at) as con:
        if functions.USED.search(sql):
            functions.register(con)
        for name, value in (params or {}).items():
            if not re.fullmatch(r"\w+", name):
                raise UsageError(f"param {name}: names are letters, digits and _")
            con.execute(f"SET VARIABLE {name} = ?", [value])
        return con.sql(sql).df()


@contextmanager
def reading(store: LabelStore, at: int | None = None):
    """A read-only connection to `store` (at snapshot `at`) whose failures name what went
    wrong in the store, or the query, in one line."""
    con = store.connect(snapshot=at)
    try:
        yield con
    except duckdb.Error as e:
        raise UsageError(explain(store, e) or f"query on store {store} failed: {e}") from None
    finally:
        con.close()
