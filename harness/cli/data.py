"""`asciitune data` (what the configured dataset holds, before any training) and `asciitune models`."""
from __future__ import annotations

import argparse
from dataclasses import replace

from harness.cli.common import add_config_args, console, load_plan, print_table
from harness.config import RunConfig
from harness.data import (
    SPLIT_TOLERANCE,
    build_dataset,
    default_manifest_path,
    describe,
    manifest_of,
    non_ascii_warning,
    uneven_split,
)
from harness.fsutil import atomic_write_json


def print_data(cfg: RunConfig, console, samples: int = 3, freeze: bool = False) -> dict:
    """Print counts, distributions, token lengths and sample pieces; optionally freeze the split."""
    from rich.table import Table
    from transformers import AutoTokenizer

    from harness.models import resolve

    ds = build_dataset(cfg.data)
    resolved = resolve(cfg.model.name)
    tok = AutoTokenizer.from_pretrained(resolved.tokenizer_path or resolved.path)
    info = describe(ds, tok, cfg.model.max_seq_length)
    s = info["summary"]
    console.print(f"[bold]{s['name']}[/bold]: {s['n_raw']} raw pieces, {s['n_empty']} empty, "
                  f"{s['n_exact_duplicates']} exact duplicates removed, {s['n_near_duplicates']} near duplicates "
                  f"(similarity >= {cfg.data.near_duplicate_similarity}): {s['n_near_duplicates_in_training']} in "
                  f"the training split, {s['n_near_duplicates_dropped']} left out (data.drop_near_duplicates="
                  f"{str(cfg.data.drop_near_duplicates).lower()}; held-out pieces keep none), "
                  f"{s['n_dropped_copy_checked']} of the training pieces' not trained on but checked for copies, "
                  f"{s['n_groups']} groups of close variants "
                  f"(>= {cfg.data.variant_similarity}; the largest of {s['largest_group']} piece(s), at most "
                  f"{s['group_cap']} unless one drawing is larger), {s['n_over_max_piece_chars']} left out as longer "
                  f"than data.max_piece_chars; data hash {s['hash']}")
    if s.get("manifest_skipped"):
        console.print(f"The frozen split is not used: {s['manifest_skipped']}, not {cfg.data.heldout_fraction:g}.")
    console.print(f"Split (data.heldout_fraction={cfg.data.heldout_fraction:g}, within {SPLIT_TOLERANCE:g}): "
                  f"training keeps {s['train_share']:.3f} of the {s['n_distinct']} distinct pieces, the held-out "
                  f"set {s['heldout_share']:.3f} of the {s['n_drawings']} drawings (one piece each, no near "
                  "duplicate)" + (f"; a run trains on {s['n_train']} of its {s['n_train_available']} training pieces "
                                  "(data.max_train_pieces)" if s["n_train"] < s["n_train_available"] else "") + ".")
    table = Table(title=f"split (tokens by {cfg.model.name})")
    for col in ("side", "pieces", "lines min/med/max", "width min/med/max", "tokens min/med/p90/max",
                "tokens total", f"> {cfg.model.max_seq_length} tokens"):
        table.add_column(col)
    for side in ("train", "heldout"):
        d = info[side]

        def q(k: str, keys: tuple[str, ...], d: dict = d) -> str:
            return "/".join(f"{d[k][x]:.0f}" for x in keys)

        table.add_row(side, str(d["pieces"]), q("lines", ("min", "median", "max")),
                      q("max_width", ("min", "median", "max")), q("tokens", ("min", "median", "p90", "max")),
                      str(d["tokens_total"]), str(d["over_max_seq_length"]))
    console.print(table)
    for piece in ds.train[:samples]:
        console.print(f"[dim]--- {piece.origin}[/dim]")
        console.print(piece.text, markup=False, highlight=False)
    for warning in non_ascii_warning(s):  # trained on, but every sample that draws them is judged invalid
        where = [p.origin for p in ds.train + ds.heldout if not p.text.isascii()]
        console.print(f"[yellow]{warning} In: {', '.join(where[:5])}{', ...' if len(where) > 5 else '.'}[/yellow]",
                      highlight=False)
    problem = uneven_split(ds, cfg.data)
    if problem:  # `asciitune run` stops on this sentence unless data.allow_uneven_split
        allowed = " (data.allow_uneven_split is true: a run goes on)" if cfg.data.allow_uneven_split else ""
        console.print(f"[yellow]{problem}{allowed}[/yellow]", highlight=False)
    over = info["train"]["over_max_seq_length"] + info["heldout"]["over_max_seq_length"]
    if over:
        console.print(f"[yellow]{over} piece(s) exceed model.max_seq_length; training will refuse them.[/yellow]")
    if freeze:
        path = default_manifest_path(cfg.data)
        if path is None:
            from pathlib import Path
            path = Path("data") / "splits" / "custom.json"
        full = build_dataset(replace(cfg.data, max_train_pieces=0))  # freeze every piece, not a training slice
        atomic_write_json(path, manifest_of(full, cfg.data.heldout_fraction))
        console.print(f"Froze the split of {len(full.train) + len(full.heldout)} pieces into {path}")
    return info


def cmd_data(args: argparse.Namespace) -> int:
    """Print counts, line/width/token distributions and samples of the configured data."""
    print_data(load_plan(args).base, console(), samples=args.samples, freeze=args.freeze)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the model registry and what is available here."""
    from harness.models import list_models

    rows = [[r["name"], r["available"], r["where"], r["description"]] for r in list_models()]
    print_table(["name", "available", "where", "description"], rows, title="asciitune models")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `data` and `models`."""
    p = sub.add_parser("data", help="describe the dataset", description="Counts, line and width distributions, "
                       "token lengths, over-length pieces and a few samples of the configured data.")
    add_config_args(p)
    p.add_argument("--samples", type=int, default=3, help="pieces to show (default 3)")
    p.add_argument("--freeze", action="store_true", help="write the current split as the frozen manifest")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list the model registry", description="List registry models and "
                       "whether each is available on this machine (nothing is downloaded).")
    p.set_defaults(func=cmd_models)
