"""`asciitune data` (what the configured dataset holds, before any training) and `asciitune models`."""
from __future__ import annotations

import argparse
from dataclasses import replace

from harness.cli.common import add_config_args, console, load_plan, print_table
from harness.config import RunConfig
from harness.data import build_dataset, default_manifest_path, describe, manifest_of
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
                  f"(>= {cfg.data.variant_similarity}), {s['n_over_max_piece_chars']} left out as longer than "
                  f"data.max_piece_chars; data hash {s['hash']}")
    table = Table(title=f"split (held-out fraction {cfg.data.heldout_fraction}; tokens by {cfg.model.name})")
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
