"""asciitune: train, judge and benchmark LoRA fine-tunes that draw ASCII art.

    asciitune run                 # the main job on the default config (packaged model + cats, CPU)
    asciitune run --help          # every command has --help

Settings come from a TOML config (`--config`, default: the built-in "default") and can be
overridden as `section.key=value`, e.g. `asciitune run lora.r=8 train.max_steps=20`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.errors import UserError

REPORTS_DIR = Path(os.environ.get("ASCIITUNE_REPORTS", "reports"))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="config overrides, e.g. lora.r=8 train.lr=1e-4 model.name=tiny")
    p.add_argument("--config", default=None, help="TOML config file or built-in name (default, seed, tiny)")
    p.add_argument("--backend", choices=["unsloth", "peft"], help="shorthand for model.backend=...")
    p.add_argument("--model", help="shorthand for model.name=... (registry name, hub id, folder, random:NAME)")


def _plan(args):
    from harness.config import load_plan

    overrides = list(args.overrides)
    if getattr(args, "backend", None):
        overrides.append(f"model.backend={args.backend}")
    if getattr(args, "model", None):
        overrides.append(f'model.name="{args.model}"')
    return load_plan(args.config, overrides, on_gpu=_has_cuda())


def _has_cuda() -> bool:
    """Whether an NVIDIA GPU is usable (imports torch, never a backend)."""
    import torch

    return torch.cuda.is_available()


def _console():
    from rich.console import Console

    # Piped output (CI logs, `| tee`) gets a wide fixed width instead of rich's 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def cmd_run(args) -> int:
    """Train and judge every variant of the config, then write results and the report."""
    from harness.runner import run_plan
    from harness.summary import print_summary

    plan = _plan(args)
    if args.variants:
        unknown = [v for v in args.variants if v not in plan.variants]
        if unknown:
            raise UserError(f"Unknown variant(s) {', '.join(unknown)}: this config has {', '.join(plan.variants)}.")
        plan = type(plan)(plan.base, {k: v for k, v in plan.variants.items() if k in args.variants}, plan.source)
    console = _console()
    try:
        run_dir, run = run_plan(plan, args.reports_dir, resume=args.resume, command=" ".join(sys.argv),
                                console=console)
    except KeyboardInterrupt:
        console.print("Interrupted: finished variants are kept; rerun with --resume to skip them.")
        return 130
    print_summary(run, console)
    if not args.no_report:
        from harness.report import write_report
        console.print(f"Report: {write_report(run_dir)}")
    failed = [n for n, v in run.variants.items() if v.status != "done"]
    return 1 if failed else 0


def cmd_train(args) -> int:
    """Train one variant in this process (what `run` starts per variant)."""
    from harness.config import Plan, RunConfig, apply_overrides
    from harness.job import run_variant
    from harness.runner import run_plan
    from harness.summary import print_summary

    if args.resume_from:
        from harness.export import check_adapter
        check_adapter(args.resume_from)  # a damaged adapter ends in one sentence here, not in the child
    if args.resolved_config:
        import json

        from harness.config import flatten
        cfg = apply_overrides(RunConfig(), flatten(json.loads(Path(args.resolved_config).read_text())))
        name = args.variant
    else:
        plan = _plan(args)
        name = args.variant or next(iter(plan.variants))
        if name not in plan.variants:
            raise UserError(f"Unknown variant '{name}': this config has {', '.join(plan.variants)}.")
        cfg = plan.variants[name]
    if args.run_dir:
        result = run_variant(name, cfg, Path(args.run_dir), resume_from=args.resume_from)
        return 0 if result.status == "done" else 1
    # A standalone train is a one-variant run with its own run folder and results.json.
    plan = Plan(cfg, {name: cfg}, args.config or "default")
    console = _console()
    run_dir, run = run_plan(plan, args.reports_dir, command=" ".join(sys.argv), console=console,
                            resume_from=args.resume_from)
    print_summary(run, console)
    return 0 if all(v.status == "done" for v in run.variants.values()) else 1


def cmd_data(args) -> int:
    """Print counts, line/width/token distributions and samples of the configured data."""
    from harness.datainfo import print_data

    plan = _plan(args)
    print_data(plan.base, _console(), samples=args.samples, freeze=args.freeze)
    return 0


def cmd_models(args) -> int:
    """List the model registry and what is available here."""
    from rich.table import Table

    from harness.models import list_models

    table = Table(title="asciitune models")
    for col in ("name", "available", "where", "description"):
        table.add_column(col, overflow="fold")
    for row in list_models():
        table.add_row(row["name"], row["available"], row["where"], row["description"])
    _console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree for every subcommand."""
    parser = argparse.ArgumentParser(prog="asciitune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where runs live (default: reports)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train and judge every variant of a config (the main job)",
                       description="Train and judge every variant of a config, each in its own process; "
                                   "write reports/runs/<run-id>/results.json and a report.")
    _add_config_args(p)
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN",
                   help="continue a run, skipping finished variants (default: newest run of this config)")
    p.add_argument("--variants", type=lambda s: [v for v in s.split(",") if v], metavar="A,B",
                   help="train only these variants (comma-separated)")
    p.add_argument("--no-report", action="store_true", help="skip writing the HTML/Markdown report")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train one variant",
                       description="Train one variant (default: the config's first) and judge it.")
    _add_config_args(p)
    p.add_argument("--variant", help="variant name from the config")
    p.add_argument("--run-dir", help="write into this run folder instead of a new one")
    p.add_argument("--resume-from", metavar="ADAPTER", help="continue training a saved LoRA adapter folder")
    p.add_argument("--resolved-config", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("data", help="describe the dataset", description="Counts, line and width distributions, "
                       "token lengths, over-length pieces and a few samples of the configured data.")
    _add_config_args(p)
    p.add_argument("--samples", type=int, default=3, help="pieces to show (default 3)")
    p.add_argument("--freeze", action="store_true", help="write the current split as the frozen manifest")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list the model registry", description="List registry models and "
                       "whether each is available on this machine (nothing is downloaded).")
    p.set_defaults(func=cmd_models)

    for module, hook in (("harness.score_cli", "add_parser"), ("harness.compare", "add_parsers"),
                         ("harness.bench_cli", "add_parser"), ("harness.export_cli", "add_parser"),
                         ("harness.generate_cli", "add_parser")):
        try:
            mod = __import__(module, fromlist=[hook])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        getattr(mod, hook)(sub)
    # Internal subcommands (e.g. bench-worker) register with help=SUPPRESS; keep them out of the listing.
    sub._choices_actions = [a for a in sub._choices_actions if a.help != argparse.SUPPRESS]
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn user errors into one sentence."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
