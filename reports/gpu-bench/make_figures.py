"""Redraw this report's figures from its results files (CPU, no GPU needed).

    python reports/gpu-bench/make_figures.py

bench-speed.png and bench-memory.png come from harness.report.plots.plot_bench on the grid run (and,
where bench-qlora-h200/results.json exists, the 4-bit grid's beside it, in that folder);
seed-losses.png overlays the per-step training losses of the two seed-workload runs.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from matplotlib.figure import Figure

from harness.fsutil import atomic_write_bytes
from harness.report.plots import plot_bench
from harness.results import load

HERE = Path(__file__).resolve().parent


def seed_losses(out: Path) -> None:
    parity = json.loads((HERE / "seed-parity.json").read_text())
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax, dx = fig.subplots(1, 2)
    losses = parity["losses"]
    for backend, color in (("peft", "#1f77b4"), ("unsloth", "#ff7f0e")):
        ax.plot(range(1, len(losses[backend]) + 1), losses[backend], color=color, lw=1, label=backend)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (trainer log)")
    ax.set_title("Seed workload, 3B architecture, random bf16 weights")
    ax.legend()
    ax.grid(alpha=0.3)
    rel = [abs(a - b) / b for a, b in zip(losses["unsloth"], losses["peft"], strict=True)]
    dx.plot(range(1, len(rel) + 1), [100 * r for r in rel], color="black", lw=1)
    dx.axhline(100 * parity["tolerance_rel_per_step"], color="red", ls="--", lw=1, label="per-step tolerance")
    dx.set_yscale("log")
    dx.set_xlabel("optimizer step")
    dx.set_ylabel("|unsloth - peft| / peft (%)")
    dx.set_title("Per-step relative loss difference")
    dx.legend()
    dx.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(out / "seed-losses.png", buf.getvalue())


if __name__ == "__main__":
    print(plot_bench(load(HERE / "bench-h200"), HERE))
    if (HERE / "bench-qlora-h200" / "results.json").is_file():  # the 4-bit grid, once measured: its own folder
        print(plot_bench(load(HERE / "bench-qlora-h200"), HERE / "bench-qlora-h200"))
    seed_losses(HERE)
