"""`asciitune run` (every variant of a config) and `asciitune train` (one variant), and the summary table."""
from __future__ import annotations

import argparse
import sys

from harness.cli.common import add_config_args, console, jobs_count, load_plan, seeds_count
from harness.errors import UserError
from harness.results import RunResult


def cmd_run(args: argparse.Namespace) -> int:
    """Train and judge every variant of the config, then write results and the report."""
    from harness.train.runner import run_plan

    if args.seeds:
        args.overrides.append(f"train.seeds={args.seeds}")
    plan = load_plan(args)
    if args.variants:
        unknown = [v for v in args.variants if v not in plan.variants]
        if unknown:
            raise UserError(f"Unknown variant(s) {', '.join(unknown)}: this config has {', '.join(plan.variants)}.")
        plan = plan.only(args.variants)
    executor = make_executor(args)  # a missing Ray ends here, before any run folder exists
    out = console()
    try:
        run_dir, run = run_plan(plan, args.reports_dir, resume=args.resume, command=" ".join(sys.argv), console=out,
                                executor=executor, multi_adapter=args.multi_adapter)
    except KeyboardInterrupt:
        out.print("Interrupted: finished variants are kept; rerun with --resume to skip them.")
        return 130
    print_summary(run, out, run_dir)
    if not args.no_report:
        from harness.report.run import write_report
        out.print(f"Report: {write_report(run_dir, run)}")
    return 0 if all(v.status == "done" for v in run.variants.values()) else 1


def make_executor(args: argparse.Namespace):
    """The executor the flags ask for: local child processes (--jobs at once) or Ray tasks."""
    from harness.train.executors import local_executor
    from harness.train.ray_executor import ray_executor

    ray_only = [flag for flag, value in (("--ray-address", args.ray_address), ("--ray-gpus-per-variant", args.ray_gpus),
                                         ("--ray-cpus-per-variant", args.ray_cpus)) if value is not None]
    if args.executor != "ray" and ray_only:
        raise UserError(f"The flag(s) {', '.join(ray_only)} only apply with --executor ray: add it, or drop them.")
    for flag, value in (("--ray-gpus-per-variant", args.ray_gpus), ("--ray-cpus-per-variant", args.ray_cpus)):
        if value is not None and value < 0:
            raise UserError(f"{flag} must be 0 or more, not {value:g}.")
    if args.executor == "ray":
        return ray_executor(args.ray_address, args.ray_gpus, args.ray_cpus, in_flight=args.jobs or 0)
    return local_executor(args.jobs or 1)


def cmd_train(args: argparse.Namespace) -> int:
    """Train one variant as a one-variant run with its own run folder and results.json."""
    from harness.train.runner import run_plan

    if args.resume_from:
        from harness.export.formats import check_adapter
        check_adapter(args.resume_from)  # a damaged adapter ends in one sentence here, not in the child
    plan = load_plan(args)
    name = args.variant or next(iter(plan.variants))
    if name not in plan.variants:
        raise UserError(f"Unknown variant '{name}': this config has {', '.join(plan.variants)}.")
    out = console()
    run_dir, run = run_plan(plan.only([name]), args.reports_dir, command=" ".join(sys.argv), console=out,
                            resume_from=args.resume_from)
    print_summary(run, out, run_dir)
    return 0 if all(v.status == "done" for v in run.variants.values()) else 1


def summary_rows(run: RunResult) -> list[list[str]]:
    """One row per variant with the numbers people look at first, then the human reference."""
    from harness.judge.verdict import final_verdict, metric_value

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = []
    for name, v in run.variants.items():
        c, la = v.curves, v.loss_analysis
        rows.append([
            name if v.status == "done" else f"{name} ({v.status})",
            final_verdict(v) + (", borderline" if v.verdict and v.verdict.borderline else ""),
            f"{c.train_loss[0]:.2f}->{c.train_loss[-1]:.2f}" if c.train_loss else "-",
            (f"{c.heldout_loss[0]:.2f}->{c.heldout_loss[-1]:.2f} ({la.heldout_min:.2f}@{la.heldout_min_step})"
             if la else "-"),
            num(metric_value(v.scores, "width_consistency")), num(metric_value(v.scores, "novelty")),
            num(metric_value(v.scores, "valid_rate")),
            f"{v.train.seconds:.0f}" if v.train.seconds else "-",
            f"{v.train.tokens_per_s:.0f}" if v.train.tokens_per_s else "-"])
    from harness.judge.seeds import describe

    for name, s in run.seeds.items():
        m = s.metrics
        rows.append([f"{name} ({len(s.replicates)} seeds)", describe(s), "", _spread(m.get("final_heldout_loss")),
                     _spread(m.get("width_consistency")), _spread(m.get("novelty")), _spread(m.get("valid_rate")),
                     "", ""])
    if run.human_reference:
        h = run.human_reference
        rows.append(["human reference", "", "", "", num(metric_value(h, "width_consistency")),
                     num(metric_value(h, "novelty")), num(metric_value(h, "valid_rate")), "", ""])
    return rows


def _spread(sp) -> str:
    """mean +- sd of a seed spread, or '-'."""
    if sp is None or sp.mean is None:
        return "-"
    return f"{sp.mean:.2f}" + (f"±{sp.sd:.2f}" if sp.sd is not None else "")


SUMMARY_HEADERS = ["variant", "verdict", "train loss", "held-out loss (min@step)", "width", "novelty", "valid",
                   "train s", "tok/s"]


def print_summary(run: RunResult, out, run_dir=None) -> None:
    """Print the summary table with rich, then why each verdict is what it is and what the data warns of."""
    from rich.table import Table

    from harness.data import data_warnings

    rows = summary_rows(run)
    if not rows:
        return
    backends = sorted({v.backend for v in run.variants.values() if v.backend})
    table = Table(title=f"run {run.run_id} ({', '.join(backends)} on {run.environment.get('device', '?')})")
    for col in SUMMARY_HEADERS:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    for line in verdict_lines(run, run_dir):
        out.print(line, markup=False, highlight=False)
    for warning in data_warnings(run.data or {}):
        out.print(f"warning: {warning}", markup=False, highlight=False, style="yellow")


def verdict_lines(run: RunResult, run_dir=None) -> list[str]:
    """Per judged variant: its verdict, the clause that decided it with its numbers, and the samples behind it."""
    from harness.judge.explain import explain
    from harness.results import read_samples

    lines = []
    for name, v in run.variants.items():
        if v.status != "done" or (v.copy_analysis is None and v.loss_analysis is None):
            continue
        try:
            rows = read_samples(run_dir, v) if run_dir is not None else []
        except (OSError, ValueError):  # a damaged samples file: the verdict's clause still prints, its samples not
            rows = []
        final = v.verdict.verdict if v.verdict else ""
        lines.append(f"{name}: {explain(v.copy_analysis, v.loss_analysis, rows, final).text()}")
    return lines


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `run` and `train`."""
    p = sub.add_parser("run", help="train and judge every variant of a config (the main job)",
                       description="Train and judge every variant of a config, each in its own process; "
                                   "write reports/runs/<run-id>/results.json and a report.")
    add_config_args(p)
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN",
                   help="continue a run, skipping finished variants (default: newest run of this config)")
    p.add_argument("--variants", type=lambda s: [v for v in s.split(",") if v], metavar="A,B",
                   help="train only these variants (comma-separated)")
    p.add_argument("--no-report", action="store_true", help="skip writing the HTML/Markdown report")
    p.add_argument("--seeds", type=seeds_count, default=None, metavar="N",
                   help="run each variant over N training/generation seeds (shorthand for train.seeds=N): "
                        "verdicts become distributions ('learning 4/5') and compare weighs changes against the "
                        "seeds' spread")
    g = p.add_argument_group("scaling out (docs/scaling.md)")
    g.add_argument("--jobs", type=jobs_count, default=None, metavar="N",
                   help="child processes at once, spread round-robin over the visible GPUs (several per GPU "
                        "when N exceeds them; on CPU the cores are split between them); fast-plan variants over "
                        "one base share the N processes (each loads the model and captures its CUDA graphs "
                        "once), every other variant gets its own; default 1. With --executor ray: the most "
                        "tasks in flight (default: all)")
    g.add_argument("--multi-adapter", action=argparse.BooleanOptionalAction, default=True,
                   help="fast-plan variants over one base (same model and lora sections, no LoRA dropout) train "
                        "together in one process, in the same kernels: one forward/backward per micro-batch for "
                        "up to 32 adapters, each with its own steps, lr, clipping and AdamW (their losses are "
                        "their solo runs'); default on, --no-multi-adapter trains them one after another "
                        "(local executor only)")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: child processes on this machine (default); ray: one Ray task per variant "
                        "(needs pip install -e '.[ray]')")
    g.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="join this Ray cluster (auto: the one `ray start` made here); default: start a local instance")
    g.add_argument("--ray-gpus-per-variant", dest="ray_gpus", type=float, default=None, metavar="G",
                   help="GPUs each variant's task asks for; a fraction shares a GPU (default: 1 where the cluster "
                        "has GPUs, else 0)")
    g.add_argument("--ray-cpus-per-variant", dest="ray_cpus", type=float, default=None, metavar="C",
                   help="CPUs each variant's task asks for (default: 1 with GPUs, else the cluster's CPUs shared "
                        "out over the variants)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train one variant",
                       description="Train one variant (default: the config's first) and judge it, as a one-variant "
                                   "run with its own run folder.")
    add_config_args(p)
    p.add_argument("--variant", help="variant name from the config")
    p.add_argument("--resume-from", metavar="ADAPTER", help="continue training a saved LoRA adapter folder")
    p.set_defaults(func=cmd_train)
