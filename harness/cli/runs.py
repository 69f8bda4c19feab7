"""`asciitune runs`: every run under the reports folder as one table, JSON or CSV, or a leaderboard page.

    asciitune runs                                  # one row per run: its best variant, verdict, numbers
    asciitune runs --wide                           # every column (date, quality, copies, full device names)
    asciitune runs --json > runs.json               # pandas.read_json("runs.json")
    asciitune runs --csv > runs.csv                 # pandas.read_csv("runs.csv")
    asciitune runs --html reports/leaderboard       # every variant of every run ranked, in one page
    asciitune runs --variants --csv > variants.csv  # one row per variant, each varying config key a column
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from harness.cli.common import REPORTS_DIR, console

GAP = 2  # spaces between two columns of the runs table


def column_widths(cells: list[list[str]], no_wrap: list[bool], width: int) -> list[int] | None:
    """Widths that fit `width` with GAP between columns, each column at least its longest word (its whole text when
    it must not wrap), the slack taken from the columns with the most; None when even the least does not fit."""
    natural = [max(map(len, column)) for column in cells]
    least = [n if keep_whole else max((len(w) for c in column for w in c.split()), default=1)
             for n, keep_whole, column in zip(natural, no_wrap, cells, strict=True)]
    if sum(least) + GAP * (len(cells) - 1) > width:
        return None
    widths = list(natural)
    excess = sum(widths) + GAP * (len(cells) - 1) - width
    while excess > 0:
        i = max(range(len(widths)), key=lambda k: widths[k] - least[k])
        widths[i] -= 1
        excess -= 1
    return widths


def fit_table(listing, root: Path, out, wide: bool = False, variants: bool = False) -> list[str]:
    """Print the runs as a table that fits the console: columns dropped by priority (Column.keep) until it does, run
    ids never cut, no word split across lines (every column at least as wide as its longest word); with `wide`, every
    column at its natural width. Returns the headers of the columns left out."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from harness.report.runs import table_columns, table_rows
    from harness.report.variant_rows import variant_columns, variant_table

    columns = (variant_columns if variants else table_columns)(listing, wide)
    dropped: list[str] = []
    while True:
        headers, rows = (variant_table if variants else table_rows)(listing, columns)
        cells = [[h, *(r[i] for r in rows)] for i, h in enumerate(headers)]
        no_wrap = [c.no_wrap for c in columns]
        widths = column_widths(cells, no_wrap, 10**6 if wide else out.width)
        droppable = [c for c in columns if c.keep < 100]
        if widths is not None or not droppable:
            break
        lowest = min(droppable, key=lambda c: c.keep)
        columns = [c for c in columns if c is not lowest]
        dropped.append(lowest.header)
    widths = widths or [max(map(len, c)) for c in cells]  # the id columns alone are wider: let the terminal wrap
    table = Table(title=f"{'variants' if variants else 'runs'} under {root}", title_justify="left", box=box.SIMPLE_HEAD,
                  padding=(0, GAP // 2), collapse_padding=True, pad_edge=False, show_edge=False)
    for header, w in zip(headers, widths, strict=True):
        table.add_column(header, width=w)
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    out.print(table)
    if dropped:
        out.print(f"Left out to fit {out.width} columns: {', '.join(dropped)}. `asciitune runs --wide` shows every "
                  "column, --json or --csv every field.", markup=False, highlight=False)
    return dropped


def cmd_runs(args: argparse.Namespace) -> int:
    """CLI: list the runs; skipped files go to stderr so that --json and --csv output stays parseable."""
    # Imported here, not at the top: the report modules bring matplotlib, which `asciitune run` need not wait for.
    from harness.report.runs import COLUMNS, row_dicts, scan, write_leaderboard
    from harness.report.variant_rows import csv_value, variant_dicts

    root = Path(getattr(args, "reports_dir", None) or REPORTS_DIR)
    listing = scan(root)
    columns, rows = variant_dicts(listing) if args.variants else (COLUMNS, row_dicts(listing))
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: csv_value(v) for k, v in r.items()} for r in rows)
    elif listing.runs:
        # --wide: as wide as the table is (a pager or a file scrolls sideways); else the terminal's width
        fit_table(listing, root, console(width=0) if args.wide else console(), wide=args.wide, variants=args.variants)
    else:
        print(f"No runs under {root}: `asciitune run` writes one there.")
    for s in listing.skipped:
        print(f"skipped {root / s.path}: {s.reason}", file=sys.stderr)
    if args.html:
        page = write_leaderboard(listing, args.html)
        twin = page.with_name("report.md") if page.name == "index.html" else page.with_suffix(".md")
        print(f"leaderboard: {page} (and its Markdown twin, {twin})", file=sys.stderr if args.json or args.csv
              else sys.stdout)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `runs` subcommand."""
    p = subparsers.add_parser("runs", help="list every run under the reports folder (table, JSON, CSV, HTML)",
                              description="List every results.json under the reports folder, one row per run: its "
                                          "config with the overrides its command line gave, its data source, its "
                                          "best variant's verdict and numbers. The table fits the terminal, "
                                          "leaving out the least needed columns and saying which. Files of another "
                                          "schema version, or damaged ones, are listed as skipped with the reason.")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of flat rows (one per run)")
    out.add_argument("--csv", action="store_true", help="print CSV, one row per run, with a header")
    out.add_argument("--wide", action="store_true", help="every column of the table, at its full width (the default "
                     "fits the terminal: fewer columns, short device names)")
    p.add_argument("--variants", action="store_true", help="one row per variant instead of per run (a seed "
                   "replicate its own row), each config key that varies among them its own column, for pandas to "
                   "pivot (docs/sweeps.md)")
    p.add_argument("--html", metavar="OUT", help="also write a leaderboard page across runs: a folder "
                   "(index.html + report.md) or a .html file (and the .md of the same name beside it)")
    # SUPPRESS: only set when given after the subcommand, so the main parser's --reports-dir is not overwritten.
    p.add_argument("--reports-dir", default=argparse.SUPPRESS,
                   help="where to look (default: the main --reports-dir, else reports)")
    p.set_defaults(func=cmd_runs)
