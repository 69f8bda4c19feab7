"""`asciitune score`: score a file of generated pieces against a dataset's training split.

    asciitune score samples.jsonl --train cats
    asciitune score samples.txt --train my_art/ --json scores.json
    asciitune score samples.jsonl --train cats --no-heldout-reference

Prints one table: the samples column and, by default, the human-reference column (the
dataset's held-out pieces scored the same way), then the copy-evidence verdict.
"""
from __future__ import annotations

import argparse

from harness.cli.common import print_table
from harness.config import DataConfig
from harness.data import build_dataset
from harness.fsutil import atomic_write_json
from harness.judge.samples import read_samples
from harness.judge.score import human_reference, score_pieces
from harness.judge.verdict import copy_verdict
from harness.report.doc import fmt_metric
from harness.results import Scores, to_jsonable

SCHEMA = "asciitune.score/2"


def add_parser(subparsers) -> None:
    """Register the `score` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser("score", help="score generated ASCII art against a dataset's training split",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="generated pieces: .jsonl (a 'text' or 'ascii' field per line, optional boolean "
                                "'cut_off') or a text file of pieces separated by blank lines")
    p.add_argument("--train", default="cats", metavar="DATA",
                   help="'cats' or any data.source (folder of .txt, .jsonl/.csv/.parquet, saved dataset); "
                        "default: cats")
    p.add_argument("--heldout-reference", action=argparse.BooleanOptionalAction, default=True,
                   help="also score DATA's held-out pieces as the human reference and give the copy verdict "
                        "(default: on)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write scores, reference and verdict as JSON")
    p.set_defaults(func=run_score)


def score_rows(columns: dict[str, Scores]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per metric, one column per scored set, cells value [95% CI]."""
    names = list(dict.fromkeys(k for s in columns.values() for k in s.metrics))
    rows = []
    for k in names:
        first = next(s.metrics[k] for s in columns.values() if k in s.metrics)
        rows.append([k, "higher" if first.higher_is_better else "lower",
                     *(fmt_metric(s.metrics.get(k)) for s in columns.values())])
    rows.append(["n", "", *(str(next(iter(s.metrics.values())).n) if s.metrics else "0" for s in columns.values())])
    return ["metric", "better", *columns], rows


def run_score(args: argparse.Namespace) -> int:
    """Score args.file against the train split of args.train; print a table; optionally write JSON."""
    pieces, cut_off = read_samples(args.file)
    ds = build_dataset(DataConfig(source=args.train))
    train = [p.text for p in ds.train]
    scores = score_pieces(pieces, train, cut_off=cut_off)
    out = {"schema": SCHEMA, "file": str(args.file), "data": ds.summary(), "samples": to_jsonable(scores)}
    columns = {"samples": scores}
    copy = None
    if args.heldout_reference:
        human = human_reference([p.text for p in ds.heldout], train)
        columns["human reference"] = human
        copy = copy_verdict(scores.per_sample, human)
        out["human_reference"], out["copy_verdict"] = to_jsonable(human), to_jsonable(copy)
    print(f"{len(pieces)} pieces from {args.file} against {len(train)} training pieces of '{ds.name}'"
          + (" (cut_off flags read)" if cut_off is not None else ""))
    print_table(*score_rows(columns))
    if copy is not None:
        print(f"copy verdict: {copy.verdict} ({copy.rule})")
    if args.json_out:
        atomic_write_json(args.json_out, out)
        print(f"wrote {args.json_out}")
    return 0
