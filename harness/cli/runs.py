"""`asciitune runs`: every run under the reports folder as one table, JSON or CSV, or a leaderboard page.

    asciitune runs                                  # one row per run: its best variant, verdict, numbers
    asciitune runs --json > runs.json               # pandas.read_json("runs.json")
    asciitune runs --csv > runs.csv                 # pandas.read_csv("runs.csv")
    asciitune runs --html reports/leaderboard       # every variant of every run ranked, in one page
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from harness.cli.common import REPORTS_DIR, console

FOLDING = ("config", "best variant", "device", "held-out min")  # the rest are short and read better whole


def _print_table(listing, root: Path) -> None:
    """A rich table whose run ids and dates never wrap: they are what a reader copies into the next command."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from harness.report.runs import TABLE_HEADERS, table_rows

    table = Table(title=f"runs under {root}", box=box.SIMPLE_HEAD, collapse_padding=True)
    for header in TABLE_HEADERS:
        table.add_column(header, no_wrap=header not in FOLDING, overflow="fold")
    for row in table_rows(listing):
        table.add_row(*(Text(c) for c in row))
    console().print(table)


def cmd_runs(args: argparse.Namespace) -> int:
    """CLI: list the runs; skipped files go to stderr so that --json and --csv output stays parseable."""
    # Imported here, not at the top: the report modules bring matplotlib, which `asciitune run` need not wait for.
    from harness.report.runs import COLUMNS, row_dicts, scan, write_leaderboard

    root = Path(getattr(args, "reports_dir", None) or REPORTS_DIR)
    listing = scan(root)
    if args.json:
        json.dump(row_dicts(listing), sys.stdout, indent=1)
        print()
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(row_dicts(listing))
    elif listing.runs:
        _print_table(listing, root)
    else:
        print(f"No runs under {root}: `asciitune run` writes one there.")
    for s in listing.skipped:
        print(f"skipped {root / s.path}: {s.reason}", file=sys.stderr)
    if args.html:
        print(f"leaderboard: {write_leaderboard(listing, args.html)}", file=sys.stderr if args.json or args.csv
              else sys.stdout)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `runs` subcommand."""
    p = subparsers.add_parser("runs", help="list every run under the reports folder (table, JSON, CSV, HTML)",
                              description="List every results.json under the reports folder, one row per run with "
                                          "its best variant's verdict and numbers. Files of another schema "
                                          "version, or damaged ones, are listed as skipped with the reason.")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of flat rows (one per run)")
    out.add_argument("--csv", action="store_true", help="print CSV, one row per run, with a header")
    p.add_argument("--html", metavar="OUT", help="also write a leaderboard page across runs: a folder "
                   "(index.html + report.md) or a .html file")
    # SUPPRESS: only set when given after the subcommand, so the main parser's --reports-dir is not overwritten.
    p.add_argument("--reports-dir", default=argparse.SUPPRESS,
                   help="where to look (default: the main --reports-dir, else reports)")
    p.set_defaults(func=cmd_runs)
