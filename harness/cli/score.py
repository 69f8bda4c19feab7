"""`asciitune score`: score a file of generated pieces against a dataset, all of which counts as training.

    asciitune score samples.jsonl --train cats
    asciitune score samples.txt --train my_art/ --json scores.json
    asciitune score samples.csv --text-column drawing --train cats
    asciitune score samples.jsonl --train cats --no-human-reference

FILE is read by its extension (docs/data.md, "Files of pieces"): a .txt file of pieces separated by blank
lines (by runs of two or more where the file has them; --blank-lines picks), or the output `asciitune
generate` printed; a .jsonl file (a "text" or "ascii" field per line, optional boolean "cut_off"); a .csv or
.parquet file (a "text" or "ascii" column, or --text-column); a folder of .txt files, one piece each.

For a model trained elsewhere on all of DATA, nothing of DATA is held out: every distinct
piece (near duplicates included) is a training piece that samples may copy and that the
character model is fitted on. The human reference scores each piece of DATA against DATA
without its own drawing (itself and its near duplicates: leave-one-drawing-out), novelty, copies
and typicality alike: what a new piece of the same kind looks like next to all of DATA. Prints
one table, the samples column beside the human-reference column, then the copy
verdict with the clause of the rule that decided it, its numbers, and the samples behind it.
"""
from __future__ import annotations

import argparse

from harness.cli.common import print_table
from harness.config import DataConfig
from harness.data import build_pool
from harness.fsutil import atomic_write_json
from harness.judge import reference
from harness.judge.explain import Explanation, explain
from harness.judge.judge import judge
from harness.judge.samples import read_sample_file
from harness.report.doc import fmt_metric
from harness.results import Scores, to_jsonable

SCHEMA = "asciitune.score/4"  # 4: leave-one-drawing-out human reference, typed rows, judge version


def add_parser(subparsers) -> None:
    """Register the `score` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser("score", help="score generated ASCII art against a dataset (all of it as training)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="generated pieces: a .txt file (pieces separated by blank lines), .jsonl, .csv or "
                                ".parquet (a 'text' or 'ascii' field or column; optional boolean 'cut_off'), or a "
                                "folder of .txt files (one piece each)")
    p.add_argument("--text-column", default="", metavar="NAME",
                   help="the field or column of a .jsonl, .csv or .parquet FILE that holds the pieces "
                        "(default: 'text', else 'ascii')")
    p.add_argument("--blank-lines", type=int, choices=[1, 2], default=None, metavar="N",
                   help="in a .txt FILE, pieces are separated by runs of at least N blank lines (1 or 2; default: 2 "
                        "where the file has such a run between pieces, else 1)")
    p.add_argument("--train", default="cats", metavar="DATA",
                   help="'cats' or any data.source (folder of .txt, .jsonl/.csv/.parquet, saved dataset); "
                        "default: cats")
    p.add_argument("--human-reference", "--heldout-reference", dest="human_reference",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="also score DATA's pieces leave-one-drawing-out as the human reference and give the copy "
                        "verdict (default: on). Without it there is no typicality either (it is calibrated on "
                        "them), so noise is the entropy rule alone and valid_rate counts samples that typicality "
                        "would call noise as valid: not comparable with a valid_rate scored with the reference")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write scores, reference and verdict as JSON")
    p.set_defaults(func=run_score)


def score_rows(columns: dict[str, Scores]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per metric (with the samples it is over), one column per set, cells value [95% CI]."""
    names = list(dict.fromkeys(k for s in columns.values() for k in s.metrics))
    rows = []
    for k in names:
        first = next(s for s in columns.values() if k in s.metrics)
        rows.append([k, "higher" if first.metrics[k].higher_is_better else "lower", first.populations.get(k, "all"),
                     *(fmt_metric(s.metrics.get(k)) for s in columns.values())])
    rows.append(["n", "", "all", *(str(s.metrics["valid_rate"].n if "valid_rate" in s.metrics else 0)
                                   for s in columns.values())])
    return ["metric", "better", "over", *columns], rows


NO_REFERENCE_NOTE = ("without the human reference (--no-human-reference) there is no typicality model and no copy "
                     "verdict: noise is the entropy rule alone, so valid_rate counts samples that typicality would "
                     "flag as noise as valid, and is not comparable with a valid_rate scored with the reference")


def run_score(args: argparse.Namespace) -> int:
    """Score args.file against every piece of args.train; print a table and the explained verdict; optionally JSON."""
    read = read_sample_file(args.file, args.text_column, args.blank_lines)
    pieces, cut_off = read.texts, read.cut_off
    cfg = DataConfig(source=args.train)
    pool, groups = build_pool(cfg, unit="drawing")
    train = [p.text for p in pool]
    out = {"schema": SCHEMA, "file": str(args.file), "read_as": read.how,
           "data": {"name": cfg.source, "n_pieces": len(train), "n_drawings": len(set(groups)),
                    "near_duplicate_similarity": cfg.near_duplicate_similarity}}
    ref = reference.external(train, groups) if args.human_reference else reference.bare(train)
    judged = judge(ref, pieces, cut_off)
    scores, copy = judged.scores, judged.copy
    columns = {"samples": scores, "human reference": ref.human} if args.human_reference else {"samples": scores}
    if args.human_reference:
        out["human_reference"], out["copy_verdict"] = to_jsonable(ref.human), to_jsonable(copy)
    else:
        out["note"] = NO_REFERENCE_NOTE
    out["samples"] = to_jsonable(scores)
    out["rows"] = [r.to_dict() for r in judged.rows]
    out["judge_version"] = judged.version
    n = len(pieces)
    print(f"{n} piece{'s' * (n != 1)} from {args.file} ({read.how}) against all {len(train)} pieces of "
          f"'{cfg.source}' as training ({len(set(groups))} distinct drawings)"
          + (" (cut_off flags read)" if cut_off is not None else ""))
    if read.note:
        print(f"note: {read.note}")
    print_table(*score_rows(columns))
    if copy is not None:
        why = explain(copy=copy, rows=judged.rows)
        out["explanation"] = why.to_dict()
        print_verdict("copy verdict", why)
    else:
        print(f"note: {NO_REFERENCE_NOTE}")
    if args.json_out:
        atomic_write_json(args.json_out, out)
        print(f"wrote {args.json_out}")
    return 0


def print_verdict(label: str, why: Explanation) -> None:
    """The verdict's deciding clause on one line, the samples behind it on the next (`score`, `generate --score`)."""
    print(f"{label}: " + "; ".join(r.clause() for r in why.reasons))
    samples = why.samples_text()
    if samples:
        print(f"  samples behind it (numbered from 0): {samples}")
