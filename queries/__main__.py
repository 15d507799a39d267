"""Reports on a label store.

python -m queries NAME [store=URI] [at=SNAPSHOT] [format=table|csv|json] [plot=out.png] [param=[k=v,...]]
python -m queries sql "SELECT ..." [store=URI]
python -m queries list
python -m queries browse [store=URI] [out=browse]   a page to look at the labels (browse --help: its keys)
"""

import sys
from dataclasses import dataclass, field

import pandas as pd

from labelgen.cli import run_command
from labelgen.config import ConfigError, StoreConf
from labelgen.errors import UsageError

from . import header, report_names, report_sql, run_sql
from .browse import browse_conf, write_page

FORMATS = ("table", "csv", "json")


@dataclass
class ReportConf(StoreConf):
    at: int | None = None  # read the store as it was at this snapshot (report `snapshots` lists them); default: the
    # latest
    format: str = "table"  # how to print the result: table | csv | json
    plot: str | None = None  # also draw the report into this PNG (reports with a chart)
    param: list[str] = field(default_factory=list)  # report parameters, NAME=VALUE each, e.g. param=[a=RUN1,b=RUN2]


default_conf = ReportConf


def report(conf, words: list[str]) -> int:
    if not words:
        raise ConfigError("name a report, 'sql' or 'list' (python -m queries list)")
    name = words[0]
    if name == "list":
        for report_name in report_names():
            print(f"{report_name:22s} {header(report_sql(report_name))['about']}")
        return 0
    if conf.format not in FORMATS:
        raise ConfigError(f"format={conf.format}: format takes {', '.join(FORMATS)}")
    try:
        params = dict(str(p).split("=", 1) for p in conf.param if "=" in str(p))
        if len(params) != len(conf.param):
            raise UsageError("param takes NAME=VALUE items, e.g. param=[a=RUN1,b=RUN2]")
        if name == "sql":
            if len(words) < 2:
                raise UsageError('the sql report needs the query text: python -m queries sql "SELECT ..."')
            sql, spec = words[1], {"about": "", "plot": ""}
        else:
            sql = report_sql(name)
            spec = header(sql)
        df = run_sql(conf.store, sql, params, conf.catalog, conf.at)
        if conf.plot:
            if not spec["plot"]:
                raise UsageError(f"report '{name}' has no chart")
            from .plot import chart

            chart(df, spec["plot"], f"{name}: {spec['about']}", conf.plot)
    except (KeyError, RuntimeError) as e:  # ValueError and FileNotFoundError: run_command's usage errors
        print(f"error: {e}", file=sys.stderr)
        return 2
    if conf.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif conf.format == "json":
        print(df.to_json(orient="records", indent=1, date_format="iso"))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 60):
            print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def browse(conf) -> int:
    """Write a page to look at the store's current labels: per category its images and
    pairs, a pair's labels drawn as lines from the source to the target image, coloured
    by their truth where the collection has it (the `pairs` report's verdicts), else by
    their confidence; filters by run, category, hops and confidence; the precision,
    stage yield and coverage charts beside them. Open out/index.html in a browser:
    from file:// too, and offline (the folder holds copies of its images)."""
    print(write_page(conf))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["browse"]:
        return run_command(browse_conf, browse, argv[1:], command="browse", announce=False)
    return run_command(default_conf, report, argv, words="REPORT [SQL]", announce=False)


if __name__ == "__main__":
    sys.exit(main())
