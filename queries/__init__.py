"""SQL reports over the label store: one .sql file per report, run by `python -m queries`."""

from importlib import resources

import duckdb

from labelgen.store import LabelStore


def report_names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files(__package__).iterdir() if p.name.endswith(".sql"))


def report_sql(name: str) -> str:
    path = resources.files(__package__) / f"{name}.sql"
    if not path.is_file():
        raise ValueError(f"no report '{name}'; reports: {', '.join(report_names())}, or `sql \"SELECT ...\"`")
    return path.read_text()


def run_sql(store_uri: str, sql: str):
    """Run SQL on a read-only connection with the `labels` view (committed runs only)."""
    con = LabelStore(store_uri).connect()
    try:
        return con.sql(sql).df()
    except duckdb.Error as e:
        raise ValueError(f"query failed: {e}") from None
    finally:
        con.close()
