"""Benchmark: the main job on the embedded default (SmolLM2-135M + cats, CPU), end to end.

    pytest bench/bench_default_run.py --benchmark-only -s

Runs `asciitune run` once in a fresh process (as a newcomer would) into a temporary reports
folder and records its wall time, each variant's training tokens/s (real, non-padding tokens
over training time without the loss probes) and the machine, as pytest-benchmark extra_info.
One round: the run takes minutes, and a repeated round would only measure the same thing.
Issue 11's budget for this run with the model cache warm is 6 minutes on 2 cores, asserted with
ASCIITUNE_BENCH_ASSERT=1 (a shared machine can be slower without the code being so).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness.environment import machine

BUDGET_S = 360


def _run_default(reports: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "--reports-dir", str(reports), "run"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return time.perf_counter() - t0


def test_default_run(benchmark, tmp_path):
    reports = tmp_path / "reports"
    wall = benchmark.pedantic(_run_default, args=(reports,), rounds=1, iterations=1)
    results = json.loads(next((reports / "runs").glob("*/results.json")).read_text())
    per_variant = {n: {"train_s": v["train"]["seconds"], "eval_s": v["train"]["eval_seconds"],
                       "tokens": v["train"]["tokens"], "tokens_per_s": v["train"]["tokens_per_s"],
                       "generation_tokens_per_s": v["generation"]["tokens_per_s"],
                       "verdict": (v.get("verdict") or {}).get("verdict")}
                   for n, v in results["variants"].items()}
    benchmark.extra_info.update({"wall_s": round(wall, 1), "variants": per_variant, "machine": machine(),
                                 "load_average_1m": os.getloadavg()[0]})
    print(json.dumps(benchmark.extra_info, indent=1))
    assert all(v["status"] == "done" for v in results["variants"].values())
    if os.environ.get("ASCIITUNE_BENCH_ASSERT") == "1":
        assert wall <= BUDGET_S, f"the default run took {wall:.0f} s, over its {BUDGET_S} s budget"
