"""Reports on a label store.

    python -m queries NAME [--store URI] [--at SNAPSHOT] [--format table|csv|json] [--plot out.png] [--param k=v ...]
    python -m queries sql "SELECT ..." [--store URI]
    python -m queries list
"""

import argparse
import sys

import pandas as pd

from labelgen.cli import HelpFormatter

from . import header, report_names, report_sql, run_sql


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m queries", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("report", help="a report name, 'sql', or 'list'")
    parser.add_argument("sql", nargs="?", help="the SQL text, with the 'sql' report")
    parser.add_argument("--store", default="labelstore", help="label store: a folder or s3://bucket/prefix")
    parser.add_argument("--catalog", help="the store's catalog; default: the one it was created with (catalog.json)")
    parser.add_argument("--at", type=int, metavar="SNAPSHOT", help="read the store as it was at this snapshot "
                        "(report `snapshots` lists them); default: the latest")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="how to print the result")
    parser.add_argument("--plot", metavar="PNG", help="also draw the report into this file")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a report parameter")
    args = parser.parse_args(argv)
    if args.report == "list":
        for name in report_names():
            print(f"{name:22s} {header(report_sql(name))['about']}")
        return 0
    try:
        params = dict(p.split("=", 1) for p in args.param if "=" in p)
        if len(params) != len(args.param):
            raise ValueError("--param takes NAME=VALUE")
        if args.report == "sql":
            if not args.sql:
                raise ValueError('the sql report needs the query text: python -m queries sql "SELECT ..."')
            sql, spec = args.sql, {"about": "", "plot": ""}
        else:
            sql = report_sql(args.report)
            spec = header(sql)
        df = run_sql(args.store, sql, params, args.catalog, args.at)
        if args.plot:
            if not spec["plot"]:
                raise ValueError(f"report '{args.report}' has no chart")
            from .plot import chart

            chart(df, spec["plot"], f"{args.report}: {spec['about']}", args.plot)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", indent=1, date_format="iso"))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 60):
            print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
