"""asciitune: train, judge and benchmark LoRA fine-tunes that draw ASCII art.

    asciitune run                 # the main job on the default config (packaged model + cats, CPU)
    asciitune run --help          # every command has --help

Settings come from a TOML config (`--config`, default: the built-in "default") and can be
overridden as `section.key=value` anywhere on the line, e.g. `asciitune run lora.r=8 --backend peft
train.max_steps=20`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli import bench, data, export, generate, report, run, runs, score
from harness.cli.common import REPORTS_DIR
from harness.errors import UserError

COMMANDS = (run, data, score, generate, report, runs, bench, export)  # each registers its own subcommands
REPORTS_HELP = "where runs live (default: reports, or $ASCIITUNE_REPORTS)"


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree for every subcommand."""
    parser = argparse.ArgumentParser(prog="asciitune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help=REPORTS_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    # --reports-dir is also accepted after the command; SUPPRESS keeps the main parser's value when it is not.
    for cmd in sub.choices.values():
        if not any("--reports-dir" in a.option_strings for a in cmd._actions):
            cmd.add_argument("--reports-dir", type=Path, default=argparse.SUPPRESS, help=REPORTS_HELP)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    # Overrides (positional section.key=value) may sit between flags: argparse's intermixed parsing
    # lets `run --no-report train.lr=1e-3 --backend peft lora.r=8` through. The subparser does the work,
    # so parse the command name first, then the rest with that subparser's intermixed parser.
    args, rest = parser.parse_known_args(argv)
    if not rest:
        return args
    sub = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
    cmd_parser = sub.choices[args.command]
    argv = list(sys.argv[1:] if argv is None else argv)
    own = argv[argv.index(args.command) + 1:]
    cmd_args = cmd_parser.parse_intermixed_args(own)
    for key, value in vars(cmd_args).items():
        setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn user errors into one sentence (exit code 2)."""
    from harness.quiet import quiet_third_party

    quiet_third_party()
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
