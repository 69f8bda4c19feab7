"""`asciitune bench`, `asciitune bench-parity` and the hidden per-backend `bench-worker`.

    asciitune bench --config seed --model random:llama-3.2-3b                  # both backends, default grid
    asciitune bench --config seed --model random:llama-3.2-3b bench.batch_sizes=[2,8] bench.seq_lens=[512,1024] \
        --extra-point 2x512:adamw_torch --bare-loop .device/bare_loop.py        # plus the bare-loop check
    asciitune bench-parity RUN_UNSLOTH RUN_PEFT                                  # parity of two training runs
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(bench: dict) -> None:
    """One line per point, then the parity finding, then one compact JSON document last."""
    print(f"\ncard: {bench.get('card')}, matmul {_fmt(bench.get('matmul_tflops'), '.4g')} TFLOP/s")
    print(f"{'backend':8} {'point':22} {'status':6} {'step s':>8} {'IQR':>7} {'tok/s':>9} {'alloc GiB':>9} "
          f"{'resv GiB':>8} {'MFU':>6}")
    for p in bench.get("points", []) + bench.get("extra_points", []):
        gib = lambda n: _fmt(n / 1024 ** 3 if n else None, ".2f")
        print(f"{p['backend']:8} {p['label']:22} {p['status']:6} {_fmt(p.get('median_step_s'), '.4f'):>8} "
              f"{_fmt(p.get('step_s_iqr'), '.4f'):>7} {_fmt(p.get('tokens_per_s'), ',.0f'):>9} "
              f"{gib(p.get('peak_allocated_bytes')):>9} {gib(p.get('peak_reserved_bytes')):>8} "
              f"{_fmt(p.get('mfu'), '.1%'):>6}")
    for row in (bench.get("bare_loop") or {}).get("comparison", []):
        print(f"bare loop {row['backend']}: harness {row['harness_point']} {_fmt(row['harness_step_s'], '.4f')} s vs "
              f"bare {_fmt(row['bare_step_s'], '.4f')} s (x{_fmt(row['ratio'], '.3f')}, "
              f"{'within' if row['within_3pct'] else 'OVER'} 3%)")
    print("parity:", bench.get("parity", {}).get("finding"))
    summary = {"card": bench.get("card"), "matmul_tflops": bench.get("matmul_tflops"),
               "settings": {k: v for k, v in bench.get("settings", {}).items() if k != "lora"},
               "points": [{k: p.get(k) for k in ("backend", "label", "status", "median_step_s", "tokens_per_s",
                                                 "peak_reserved_bytes", "mfu")}
                          for p in bench.get("points", []) + bench.get("extra_points", [])],
               "parity_ok": bench.get("parity", {}).get("ok")}
    print(json.dumps(summary, separators=(",", ":"), default=str))


def cmd_bench(args) -> int:
    """Benchmark the backends and write a run folder."""
    from harness.bench import BACKEND_ORDER, parse_extra_point, run_bench
    from harness.cli import _plan

    plan = _plan(args)
    backends = [args.backend] if args.backend else list(BACKEND_ORDER)
    extra = [parse_extra_point(x) for x in args.extra_point or []]
    run_dir, run = run_bench(plan, args.reports_dir, backends=backends, cats=not args.no_cats, extra=extra,
                             bare_loop=Path(args.bare_loop) if args.bare_loop else None, command=" ".join(sys.argv))
    print_table(run.bench)
    print(f"results: {run_dir / 'results.json'}", file=sys.stderr)
    failed = [p for p in run.bench["points"] + run.bench["extra_points"] if p["status"] == "error"]
    return 1 if failed or any(w.get("exit_code") for w in run.bench["workers"].values()) else 0


def cmd_worker(args) -> int:
    """One backend's measurements (started by `bench`)."""
    from harness.bench import PointSpec
    from harness.bench_worker import run_worker
    from harness.config import RunConfig, apply_overrides, flatten

    cfg = apply_overrides(RunConfig(), flatten(json.loads(Path(args.resolved_config).read_text(encoding="utf-8"))))
    points = [PointSpec(**{k: v for k, v in p.items() if k != "label"})
              for p in json.loads(Path(args.points).read_text(encoding="utf-8"))]
    run_worker(cfg, args.backend, points, Path(args.out))
    return 0


def cmd_parity(args) -> int:
    """Loss parity, time and memory of two one-variant training runs."""
    from harness.fsutil import atomic_write_json
    from harness.parity import run_parity
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
    """Register bench, bench-parity and the hidden bench-worker."""
    from harness.cli import _add_config_args

    p = sub.add_parser("bench", help="benchmark Unsloth vs plain PEFT: speed, memory, loss parity (GPU)",
                       description="Each backend in its own process on identical batches: load and warm-up time, "
                                   "median step time and IQR, tokens/s, peak memory, MFU and per-step losses over "
                                   "the cats workload and a batch x length grid. --backend limits it to one backend.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    _add_config_args(p)
    p.add_argument("--no-cats", action="store_true", help="leave out the original cats workload point")
    p.add_argument("--extra-point", action="append", metavar="BxS[:OPTIM]",
                   help="an extra synthetic point outside the grid, e.g. 2x512:adamw_torch (repeatable)")
    p.add_argument("--bare-loop", metavar="SCRIPT", help="also run this bare_loop.py per backend at the first "
                   "extra point's shape (default 2x512) and compare step times")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-parity", help="loss parity of two training runs (e.g. unsloth vs peft)",
                       description="Compare the per-step training losses, final probe losses, time and memory of "
                                   "two one-variant runs trained on the same data.")
    p.add_argument("run", help="run folder or id of the backend under test")
    p.add_argument("reference", help="run folder or id of the reference backend (peft)")
    p.add_argument("--steps", type=int, default=10, help="first steps held to the per-step tolerance (default 10)")
    p.add_argument("--out", type=Path, help="write the parity JSON here")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("bench-worker")  # no help= keeps it out of the command list
    p.add_argument("--resolved-config", required=True)
    p.add_argument("--points", required=True)
    p.add_argument("--backend", required=True, choices=["unsloth", "peft"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_worker)
