"""`asciitune report` (a run's HTML and Markdown) and `asciitune compare` (runs against a baseline, with a gate).

    asciitune report A                                                        # A: run folder or run id
    asciitune compare reports/runs/A reports/runs/B --fail-on novelty=0.05   # exit 1 on a real regression
    asciitune compare A B C --out reports/compare-abc                         # HTML + Markdown across runs
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from harness.cli.common import print_table
from harness.errors import UserError
from harness.judge.rejudge import same_judge
from harness.report.compare import (
    DELTA_HEADERS,
    GATE_RULE,
    GATED,
    NOISE_RULE,
    compare,
    delta_rows,
    write_comparison,
)
from harness.results import load, resolve_run_dir


def parse_fail_on(items: list[str]) -> dict[str, float]:
    """`metric=delta` strings to a dict; the delta is how much worse the metric may get."""
    out = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or value < 0 or math.isnan(value):
            raise UserError(f"Malformed --fail-on '{item}': write metric=delta with delta >= 0, e.g. novelty=0.05.")
        out[name.strip()] = value
    return out


def load_thresholds(path: str | Path) -> dict[str, float]:
    """Thresholds from a TOML or JSON file: metric = delta, at top level or under [fail_on]."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise UserError(f"Could not read thresholds file {path} ({exc}): give a TOML or JSON file of "
                        "metric = delta.") from None
    table = doc.get("fail_on", doc) if isinstance(doc, dict) else None
    if not isinstance(table, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                                              for v in table.values()):
        raise UserError(f"Thresholds file {path} must map metric names to numbers >= 0 (optionally under fail_on).")
    return {str(k): float(v) for k, v in table.items()}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `report` and `compare` subcommands."""
    p = subparsers.add_parser("report", help="write index.html and report.md for a run",
                              description="Write plots, index.html and report.md into a run folder.")
    p.add_argument("run", help="run folder, its results.json, or a run id under REPORTS_DIR/runs")
    p.set_defaults(func=run_report)
    p = subparsers.add_parser("compare", help="compare runs with the first; gate regressions",
                              description=f"Compare runs with the first (the baseline). {NOISE_RULE} {GATE_RULE}")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or run ids; the first is the baseline")
    p.add_argument("--fail-on", action="append", default=[], metavar="METRIC=DELTA",
                   help="fail if METRIC got worse by more than DELTA (repeatable), e.g. novelty=0.05")
    p.add_argument("--thresholds", metavar="FILE", help="TOML/JSON file of metric = delta (--fail-on wins)")
    p.add_argument("--out", metavar="DIR", help="write the comparison report here (default with 3+ runs: "
                   "REPORTS_DIR/compare-<timestamp>)")
    p.set_defaults(func=run_compare)


def run_report(args: argparse.Namespace) -> int:
    """CLI: write a run's report and print where it is."""
    from harness.report.run import write_report  # matplotlib (seconds on a fresh machine): only when drawing

    path = write_report(resolve_run_dir(args.run, args.reports_dir))
    print(path)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """CLI: compare runs, print the table, write a report for 3+ runs or --out; 1 on a gated regression."""
    thresholds = load_thresholds(args.thresholds) if args.thresholds else {}
    thresholds.update(parse_fail_on(args.fail_on))
    dirs = [resolve_run_dir(r, args.reports_dir) for r in args.runs]
    comp = compare(same_judge([(load(d), d) for d in dirs]), thresholds)
    for w in comp.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"baseline A = {comp.labels[0]}; {NOISE_RULE}")
    print_table(DELTA_HEADERS, delta_rows(comp))
    if comp.unmatched:
        print("not compared: " + ", ".join(comp.unmatched))
    out = args.out or (len(comp.runs) > 2 and
                       args.reports_dir / f"compare-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    if out:
        print(f"report: {write_comparison(comp, out)}")
    if comp.failed:
        names = ", ".join(dict.fromkeys(f.delta.metric for f in comp.failures))
        print(f"FAIL: {names} got worse (a worse verdict, or beyond a threshold):", file=sys.stderr)
        for f in comp.failures:
            print(f"  {f.message()}", file=sys.stderr)
        return 1
    print(pass_line(comp))
    return 0


def pass_line(comp) -> str:
    """What a passing gate checked, in one line (a CI log shows the gate ran, not only that nothing failed)."""
    n_runs, n_units = len(comp.runs) - 1, len({d.variant for d in comp.deltas})
    gated = ", ".join(dict.fromkeys([*GATED, *comp.thresholds]))
    return (f"PASS: no verdict moved to a worse tier and no gated metric ({gated}) regressed beyond noise or its "
            f"threshold, in {n_units} variant{'s' * (n_units != 1)} of {n_runs} run{'s' * (n_runs != 1)} against "
            f"{comp.labels[0]}.")
