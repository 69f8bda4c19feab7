"""What every command shares: the reports folder, the config arguments, the console and tables."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

REPORTS_DIR = Path(os.environ.get("ASCIITUNE_REPORTS", "reports"))


def add_config_args(p: argparse.ArgumentParser) -> None:
    """`section.key=value` overrides (anywhere on the line), --config, --backend and --model."""
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="config overrides, e.g. lora.r=8 train.lr=1e-4 model.name=tiny (may sit between flags)")
    p.add_argument("--config", default=None, help="TOML config file or built-in name (default, seed, tiny)")
    p.add_argument("--backend", choices=["unsloth", "peft"], help="shorthand for model.backend=...")
    p.add_argument("--model", help="shorthand for model.name=... (registry name, hub id, folder, random:NAME)")


def load_plan(args: argparse.Namespace):
    """The Plan described by a command's config arguments, checked before anything runs."""
    from harness.backends.common import has_cuda  # imports torch when called, never a backend
    from harness.config import load_plan as _load

    overrides = list(args.overrides)
    if getattr(args, "backend", None):
        overrides.append(f"model.backend={args.backend}")
    if getattr(args, "model", None):
        overrides.append(f'model.name="{args.model}"')
    # Check the config before has_cuda() imports torch (seconds): a bad value fails at once. Loading is cheap.
    plan = _load(args.config, overrides, on_gpu=False)
    return _load(args.config, overrides, on_gpu=True) if has_cuda() else plan


def jobs_count(text: str) -> int:
    """argparse type of --jobs: a whole number of 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number of 1 or more, not '{text}'")
    return int(text)


def seeds_count(text: str) -> int:
    """argparse type of --seeds: a whole number of 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--seeds takes a whole number of 1 or more, not '{text}'")
    return int(text)


PIPED_WIDTH = 140  # columns of console output that goes to a pipe or a file (CI logs, `| tee`) rather than 80


def console(width: int | None = None):
    """A rich console: the terminal's width, or PIPED_WIDTH when piped; width=0 is unlimited (a table as wide as
    it is, for a pager or a file), another number that many columns."""
    from rich.console import Console

    if width == 0:
        width = 10_000
    return Console(highlight=False, width=width or (None if sys.stdout.isatty() else PIPED_WIDTH))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None,
                out=None) -> None:
    """A rich table of plain-text cells (no markup is interpreted)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for h in headers:
        table.add_column(h, overflow="fold")
    for row in rows:
        table.add_row(*(Text(str(c)) for c in row))
    (out or console()).print(table)
