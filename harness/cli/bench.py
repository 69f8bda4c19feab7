"""`asciitune bench` (Unsloth vs plain PEFT on the GPU) and `asciitune bench-parity` (two training runs).

    asciitune bench --config seed --model random:llama-3.2-3b                  # both backends, default grid
    asciitune bench --config seed --model random:llama-3.2-3b 'bench.batch_sizes=[2,8]' --extra-point 2x512:adamw_torch
    asciitune bench-parity RUN_UNSLOTH RUN_PEFT                                  # parity of two training runs
    asciitune bench --workload seed --config seed --model random:llama-3.2-3b    # seed vs fast plan, QLoRA, sweep

--bare-loop SCRIPT also times a training loop of your own at the first extra point's shape: asciitune ships
none; it runs `python SCRIPT --backend B --model FOLDER --steps N --seq S --bs B` per backend and reads the
last line that starts with `RESULT ` followed by a JSON object holding "median_step_s".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.cli.common import add_config_args, jobs_count, load_plan, print_table
from harness.errors import UserError
from harness.results import RunResult

SEED_OUT = "reports/gpu-bench/seed-workload.json"


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_bench(run: RunResult) -> None:
    """A table of points, then bare-loop rows and the parity finding, then one compact JSON document last."""
    b = run.bench
    if b is None:
        return
    quant = ", base model in 4-bit (NF4)" if b.settings.get("load_in_4bit") else ""
    print(f"\ncard: {b.card}, matmul {_fmt(b.matmul_tflops, '.4g')} TFLOP/s{quant}")
    gib = lambda n: _fmt(n / 1024 ** 3 if n else None, ".2f")
    print_table(["backend", "point", "status", "step s", "IQR", "tok/s", "alloc GiB", "resv GiB", "MFU"],
                [[p.backend, p.label, p.status, _fmt(p.median_step_s, ".4f"), _fmt(p.step_s_iqr, ".4f"),
                  _fmt(p.tokens_per_s, ",.0f"), gib(p.peak_allocated_bytes), gib(p.peak_reserved_bytes),
                  _fmt(p.mfu, ".1%")] for p in b.points + b.extra_points])
    for row in b.bare_loop.get("comparison", []):
        print(f"bare loop {row['backend']}: harness {row['harness_point']} {_fmt(row['harness_step_s'], '.4f')} s vs "
              f"bare {_fmt(row['bare_step_s'], '.4f')} s (x{_fmt(row['ratio'], '.3f')}, "
              f"{'within' if row['within_3pct'] else 'OVER'} 3%)")
    print("parity:", b.parity.get("finding"))
    summary = {"card": b.card, "matmul_tflops": b.matmul_tflops,
               "settings": {k: v for k, v in b.settings.items() if k != "lora"},
               "points": [{k: getattr(p, k) for k in ("backend", "label", "status", "median_step_s", "tokens_per_s",
                                                      "peak_reserved_bytes", "mfu")}
                          for p in b.points + b.extra_points],
               "parity_ok": b.parity.get("ok")}
    print(json.dumps(summary, separators=(",", ":"), default=str))


def print_seed_workload(doc: dict) -> None:
    """The seed-workload arms, parity, sweep and targets as tables, then one compact JSON document last."""
    gib = lambda n: _fmt(n / 1024 ** 3 if n else None, ".1f")
    print(f"\ncard: {doc['card']}, matmul {_fmt(doc.get('matmul_tflops'), '.0f')} TFLOP/s")
    def train_s(r: dict) -> str:
        full = r.get("train_seconds_extrapolated") if r.get("partial") else None
        return _fmt(r["train_seconds"], ".2f") + (f" (~{full:.0f} full, extrapolated)" if full else "")

    print_table(["arm", "status", "steps", "train s", "warm-up s", "tok/s", "peak GiB", "MFU", "load s"],
                [[r["name"], str(r["status"])[:24], f"{r['steps']}/{r['steps_planned']}", train_s(r),
                  _fmt(r["warmup_seconds"], ".2f"), _fmt(r["tokens_per_s"], ",.0f"), gib(r["peak_reserved_bytes"]),
                  _fmt(r["mfu"], ".1%"), _fmt(r.get("load_seconds"), ".1f")] for r in doc["arms"]])
    par = doc.get("parity") or {}
    for name, v in (par.get("arms") or {}).items():
        print(f"parity {name} vs {par['reference']}: max {_fmt(v['max_rel_diff'], '.3%')} over {v['steps_compared']} "
              f"steps (tolerance {v['tolerance']:.1%}) {'ok' if v['ok'] else 'OVER'}")
    sweep = doc.get("sweep")
    for key in ("sweep", "sweep_32"):
        sw = doc.get(key)
        if sw:
            procs = "; ".join(f"process {p['pid']}: {len(p['variants'])} variants, " + ", ".join(
                f"{k} {v:.1f}" for k, v in p["phases"].items()) + " s" for p in sw.get("processes") or [])
            print(f"{key}: {sw['done']}/{sw['variants']} variants ({sw.get('engine')}), {sw['wall_seconds']} s wall "
                  f"({sw['status']}); {procs}")
    if sweep and sweep.get("parity"):
        print(f"sweep parity vs each variant alone: max {_fmt(sweep['parity_max_rel_diff'], '.3%')} "
              f"(tolerance {sweep['tolerance']:.1%}) {'ok' if sweep['parity_ok'] else 'OVER'}")
    for name, t in (doc.get("targets") or {}).items():
        print(f"target {name}: {t['value']} (bound {t['bound']}): {'-' if t['met'] is None else t['met']}")
    print(json.dumps({"card": doc["card"], "arms": [{k: r[k] for k in ("name", "backend", "plan", "train_seconds",
                      "warmup_seconds", "tokens_per_s", "peak_reserved_bytes", "mfu")} for r in doc["arms"]],
                      "parity": {k: par.get(k) for k in ("max_rel_diff", "tolerance")},
                      "sweep": {k: (sweep or {}).get(k) for k in ("variants", "engine", "wall_seconds", "done",
                                                                   "parity_max_rel_diff")},
                      "sweep_32": {k: (doc.get("sweep_32") or {}).get(k)
                                   for k in ("variants", "wall_seconds", "done")}}, default=str))


def _keep_other_cards_document(out: Path, explicit: bool) -> None:
    """Refuse to overwrite, by default, a document measured on another card (the committed H200 one, say)."""
    if explicit or not out.is_file():
        return
    from harness.gpu.worker import card_info

    try:
        theirs = json.loads(out.read_text(encoding="utf-8")).get("card", "")
    except (OSError, ValueError, AttributeError):
        return
    ours = card_info().get("name", "")
    if theirs and theirs != ours:
        raise UserError(f"{out} holds a measurement made on {theirs}, not this {ours or 'machine'}: pass --out "
                        f"with another path (or with this one to replace it).")


def cmd_seed_workload(args) -> int:
    """`bench --workload seed`: arms and sweep in one call, written to --out."""
    from harness.gpu.seed import SCHEDULE, run_seed_workload

    plan = load_plan(args)
    out = Path(args.out or SEED_OUT)
    _keep_other_cards_document(out, explicit=args.out is not None)
    work = Path(args.reports_dir) / "bench-seed"
    only = [x.strip() for x in args.arms.split(",") if x.strip()] if args.arms else None
    if unknown := [x for x in only or [] if x not in {i.name for i in SCHEDULE}]:
        raise UserError(f"Unknown --arms item(s) {', '.join(unknown)}: choose from "
                        f"{', '.join(i.name for i in SCHEDULE)}.")
    doc = run_seed_workload(plan, out, work, budget_s=args.budget_s, jobs=args.jobs,
                            variants=args.variants, only=only, command=" ".join(sys.argv))
    print_seed_workload(doc)
    print(f"results: {out}", file=sys.stderr)
    sweeps = [sw for sw in (doc.get("sweep"), doc.get("sweep_32")) if sw]
    ran = doc["arms"] or sweeps
    ok = all(r["status"] == "ok" for r in doc["arms"]) and all(sw["done"] == sw["variants"] for sw in sweeps)
    return 0 if ran and ok else 1


def cmd_bench(args) -> int:
    """Benchmark the backends and write a run folder."""
    from harness.gpu.bench import BACKEND_ORDER, parse_extra_point, run_bench

    if args.workload == "seed":
        return cmd_seed_workload(args)
    plan = load_plan(args)
    backends = [args.backend] if args.backend else list(BACKEND_ORDER)
    extra = [parse_extra_point(x) for x in args.extra_point or []]
    run_dir, run = run_bench(plan, args.reports_dir, backends=backends, cats=not args.no_cats, extra=extra,
                             bare_loop=Path(args.bare_loop) if args.bare_loop else None, command=" ".join(sys.argv))
    print_bench(run)
    print(f"results: {run_dir / 'results.json'}", file=sys.stderr)
    failed = [p for p in run.bench.points + run.bench.extra_points if p.status in ("error", "refused")]  # oom is data
    return 1 if failed or any(w.get("exit_code") for w in run.bench.workers.values()) else 0


def cmd_parity(args) -> int:
    """Loss parity, time and memory of two one-variant training runs."""
    from harness.fsutil import atomic_write_json
    from harness.gpu.parity import run_parity
    from harness.results import load

    result = run_parity(load(args.run, args.reports_dir), load(args.reference, args.reports_dir), steps=args.steps)
    if args.out:
        atomic_write_json(args.out, result)
    for backend, t in result["train"].items():
        mem = t["peak_memory_bytes"] / 1024 ** 3 if t["peak_memory_bytes"] else 0
        print(f"{backend:8} {t['seconds']:8.1f} s  {t['steps']} steps  {t['tokens_per_s']:,.0f} tok/s  "
              f"peak {mem:.2f} GiB ({t['peak_memory_kind']})")
    print(result["finding"])
    print(json.dumps({k: result[k] for k in ("ok", "backends", "runs", "tolerance_rel_per_step",
                                             "tolerance_rel_final", "same_data")}, separators=(",", ":")))
    return 0 if result["ok"] else 1


def add_parser(sub) -> None:
    """Register bench and bench-parity."""

    p = sub.add_parser("bench", help="benchmark Unsloth vs plain PEFT: speed, memory, loss parity (GPU)",
                       description="Each backend in its own process on identical batches: load and warm-up time, "
                                   "median step time and IQR, tokens/s, peak memory, MFU and per-step losses over "
                                   "the cats workload and a batch x length grid. --backend limits it to one backend.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_config_args(p)
    p.add_argument("--no-cats", action="store_true", help="leave out the original cats workload point")
    p.add_argument("--extra-point", action="append", metavar="BxS[:OPTIM]",
                   help="an extra synthetic point outside the grid, e.g. 2x512:adamw_torch (repeatable)")
    p.add_argument("--bare-loop", metavar="SCRIPT", help="also run a loop script of your own per backend at the "
                   "first extra point's shape (default 2x512) and compare step times (below: what it is called "
                   "with and must print; none ships with asciitune)")
    p.add_argument("--workload", choices=["grid", "seed"], default="grid",
                   help="grid: the batch x length points above (default); seed: the seed workload's arms (seed and "
                        "fast plan, both backends, 4-bit) and an 8-variant concurrent sweep, in one call")
    p.add_argument("--out", help=f"--workload seed: the document (default {SEED_OUT}, unless it holds another "
                   "card's measurement)")
    p.add_argument("--jobs", type=jobs_count, default=None, help="--workload seed: sweep processes at once, each "
                   "training its share of the variants over one load (default: 3, fewer if memory says so)")
    p.add_argument("--variants", type=int, default=8, help="--workload seed: sweep variants (default 8)")
    p.add_argument("--budget-s", type=float, default=560.0, help="--workload seed: seconds for everything; items "
                   "past it are skipped and a seed-plan arm at its cap reports a measured partial (default 560)")
    p.add_argument("--arms", help="--workload seed: only these items, in this order, comma-separated (e.g. "
                                  "sweep,sweep-solo,sweep-32,fast-peft)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-parity", help="loss parity of two training runs (e.g. unsloth vs peft)",
                       description="Compare the per-step training losses, final probe losses, time and memory of "
                                   "two one-variant runs trained on the same data.")
    p.add_argument("run", help="run folder or id of the backend under test")
    p.add_argument("reference", help="run folder or id of the reference backend (peft)")
    p.add_argument("--steps", type=int, default=10, help="first steps held to the per-step tolerance (default 10)")
    p.add_argument("--out", type=Path, help="write the parity JSON here")
    p.set_defaults(func=cmd_parity)
