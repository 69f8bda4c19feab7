"""The multi-adapter sweep's parity, read against the control: writes parity-summary.json beside this file.

    python reports/gpu-bench/multi-adapter-h200/make_parity.py

Inputs (one H200, random Llama-3.2-3B weights, the seed workload's 120 steps, bf16): sweep-8-raw.json (the sweep's
8 variants in the multi-adapter engine, and each lr trained alone on the fast plan: `sweep-solo`) and
parity-control.json (bench/parity_control.py: three lrs trained alone twice with Unsloth's fused LoRA kernels and
once with peft's plain LoRA forwards, the forwards the engine's stacked adapters take).
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def diff(a: list[float], b: list[float]) -> dict:
    """Per-step relative differences of a against b: max, mean, and the step of the max."""
    d = [abs(x - y) / abs(y) for x, y in zip(a, b, strict=True)]
    return {"max": max(d), "mean": sum(d) / len(d), "worst_step": d.index(max(d)) + 1}


def main() -> None:
    raw = json.loads((HERE / "sweep-8-raw.json").read_text())
    control = json.loads((HERE / "parity-control.json").read_text())
    out = {}
    for lr, runs in control["losses"].items():
        multi = raw["sweep"]["losses"][f"lr{float(lr):g}"]["losses"]
        out[lr] = {"multi vs solo, same LoRA kernels (plain)": diff(multi, runs["plain"]),
                   "solo rerun vs solo (fused, twice)": diff(runs["fused_again"], runs["fused"]),
                   "multi vs solo, Unsloth's fused kernels": diff(multi, runs["fused"]),
                   "solo plain vs solo fused": diff(runs["plain"], runs["fused"])}
    (HERE / "parity-summary.json").write_text(json.dumps(out, indent=1) + "\n")
    for lr, rows in out.items():
        for what, d in rows.items():
            print(f"lr {lr:8s} {what:42s} max {d['max']:.3%}  mean {d['mean']:.3%}")


if __name__ == "__main__":
    main()
