"""`python -m queries NAME [--store URI] [--format table|csv|json]`, or `python -m queries sql "SELECT ..."`."""

import argparse
import sys

import pandas as pd

from . import report_names, report_sql, run_sql


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m queries", description=__doc__)
    parser.add_argument("report", help=f"one of: {', '.join(report_names())}, or 'sql'")
    parser.add_argument("sql", nargs="?", help="the SQL text, with the 'sql' report")
    parser.add_argument("--store", default="labelstore", help="label store (default: ./labelstore)")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    args = parser.parse_args(argv)
    try:
        if args.report == "sql":
            if not args.sql:
                raise ValueError('the sql report needs the query text: python -m queries sql "SELECT ..."')
            sql = args.sql
        else:
            sql = report_sql(args.report)
        df = run_sql(args.store, sql)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", indent=1))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
