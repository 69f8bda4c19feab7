"""`asciitune score`: score a file of generated pieces against a dataset's training split.

    asciitune score samples.jsonl --train cats
    asciitune score samples.txt --train my_art/ --json scores.json
    asciitune score samples.jsonl --train cats --no-heldout-reference

Prints one table: the samples column and, by default, the human-reference column (the
dataset's held-out pieces scored the same way), then the copy-evidence verdict.
"""
from __future__ import annotations

import argparse

from harness.config import DataConfig
from harness.data import build_dataset
from harness.fsutil import atomic_write_json
from harness.score import copy_verdict, format_table, human_reference, read_samples, score_pieces

SCHEMA = "asciitune.score/1"


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


def run_score(args: argparse.Namespace) -> int:
    """Score args.file against the train split of args.train; print a table; optionally write JSON."""
    pieces, cut_off = read_samples(args.file)
    ds = build_dataset(DataConfig(source=args.train))
    train = [p.text for p in ds.train]
    scores = score_pieces(pieces, train, cut_off=cut_off)
    out = {"schema": SCHEMA, "file": str(args.file), "data": ds.summary(), "samples": scores}
    rows = {"samples": scores}
    if args.heldout_reference:
        human = human_reference([p.text for p in ds.heldout], train)
        rows["human reference"] = human
        out["human_reference"] = human
        out["copy_verdict"] = copy_verdict(scores, human)
    print(f"{len(pieces)} pieces from {args.file} against {len(train)} training pieces of '{ds.name}'"
          + (" (cut_off flags read)" if cut_off is not None else ""))
    print(format_table(rows))
    if "copy_verdict" in out:
        v = out["copy_verdict"]
        print(f"copy verdict: {v['verdict']} ({v['rule']})")
    if args.json_out:
        atomic_write_json(args.json_out, out)
        print(f"wrote {args.json_out}")
    return 0
