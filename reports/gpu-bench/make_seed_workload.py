"""Assemble seed-workload.json from the GPU calls' raw files, and redraw its figures (CPU, no GPU needed).

    python reports/gpu-bench/make_seed_workload.py                       # figures from the committed files
    python reports/gpu-bench/make_seed_workload.py --main DIR --extra DIR # merge two calls' outputs first

`asciitune bench --workload seed` writes seed-workload.json and seed-workload-raw.json in one call. The
committed document joins two calls of one machine lease (2026-12-01, one H200, same random-weight folder):
the first ran the fast and seed arms and the sweep; its budget ran out before the QLoRA arms, which the
second call ran with `--arms qlora-fast-unsloth,qlora-fast-peft`. Rows, parity and targets are recomputed
here by harness.gpu.seed_summary from the merged raw records; each arm says which call measured it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure

from harness.fsutil import atomic_write_json
from harness.gpu.seed_summary import REFERENCE, arm_row, parity, targets
from harness.report.plots import save_png

HERE = Path(__file__).resolve().parent
DOC, RAW = HERE / "seed-workload.json", HERE / "seed-workload-raw.json"


def merge(main: Path, extra: Path | None) -> None:
    """seed-workload.json (+ -raw) from the first call's files and the extra arms of a second call."""
    from harness.gpu.bench import flops_per_token

    doc = json.loads((main / "seed-workload.json").read_text())
    raw = json.loads((main / "seed-workload-raw.json").read_text())["arms"]
    peaks = {name: doc["matmul_tflops"] for name in raw}
    for rec in raw.values():
        rec["measured_in"] = f"call 1 ({doc['date']})"
    if extra:
        xdoc = json.loads((extra / "qlora-workload.json").read_text())
        for name, rec in json.loads((extra / "qlora-workload-raw.json").read_text())["arms"].items():
            rec["measured_in"] = (f"call 2 ({xdoc['date']}): same lease and machine, same random-weight folder "
                                  f"{Path(xdoc['model_folder']).name}")
            raw[name], peaks[name] = rec, xdoc["matmul_tflops"]
        doc["matmul_tflops_call2"] = xdoc["matmul_tflops"]
    rows = {}
    for name, rec in raw.items():
        rows[name] = {**arm_row(rec, peaks[name], flops_per_token), "measured_in": rec["measured_in"]}
    doc["arms"] = list(rows.values())
    doc["parity"] = parity(raw)
    doc["targets"] = targets(rows, doc["parity"], doc["sweep"])
    doc["skipped"] = [s for s in doc.get("skipped", []) if s["name"] not in raw]
    atomic_write_json(DOC, doc)
    atomic_write_json(RAW, {"arms": raw, "sweep": doc["sweep"]})


def figures() -> None:
    """seed-workload-time.png (steps and warm-up per arm), -parity.png (per-step losses), -sweep.png."""
    doc, raw = json.loads(DOC.read_text()), json.loads(RAW.read_text())["arms"]
    rows = doc["arms"]
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax = fig.subplots()
    names = [r["name"] for r in rows]
    steps = [r["train_seconds"] or 0 for r in rows]
    warm = [0 if r["plan"] == "seed" else (r["warmup_seconds"] or 0) for r in rows]  # seed: inside its steps
    ax.barh(names, steps, color="#1f77b4", label="optimizer steps (measured)")
    ax.barh(names, warm, left=steps, color="#aec7e8", label="warm-up + graph captures")
    for i, r in enumerate(rows):
        if r.get("partial") and r.get("train_seconds_extrapolated"):
            ax.barh(i, r["train_seconds_extrapolated"] - steps[i], left=steps[i], color="none", edgecolor="#1f77b4",
                    hatch="//", label=f"extrapolated rest ({r['steps']}/{r['steps_planned']} steps measured)")
        ax.text(steps[i] + warm[i], i, f" {steps[i]:.1f} s", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(left=1)  # bars start at 0, which a log axis cannot show
    ax.set_xlabel("seconds (log scale)")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Seed workload on one {doc['card']}: {rows[0]['steps_planned']} optimizer steps", fontsize=9)
    save_png(fig, HERE, "seed-workload-time.png")

    ref = raw[REFERENCE]["losses"]
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax, dx = fig.subplots(1, 2)
    ax.plot(range(1, len(ref) + 1), ref, color="k", lw=1.5, label=f"{REFERENCE} (seed plan)")
    for name, rec in raw.items():
        if name == REFERENCE or not rec.get("losses"):
            continue
        ax.plot(range(1, len(rec["losses"]) + 1), rec["losses"], lw=0.8, label=name)
        n = min(len(ref), len(rec["losses"]))
        dx.plot(range(1, n + 1), [100 * (a - b) / b for a, b in zip(rec["losses"][:n], ref[:n])], lw=0.8, label=name)
    for y in (-0.5, 0.5):
        dx.axhline(y, color="r", lw=0.6, ls="--")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    dx.set_xlabel("optimizer step")
    dx.set_ylabel(f"% difference vs {REFERENCE}")
    dx.set_title("red: the fast plan's 0.5% bound (4-bit arms: 5%)", fontsize=8)
    save_png(fig, HERE, "seed-workload-parity.png")

    sweep = doc.get("sweep") or {}
    done = [v for v in sweep.get("per_variant", []) if v["status"] == "done" and v["seconds"]]
    if done:
        fig = Figure(figsize=(9, 3), layout="constrained")
        ax = fig.subplots()
        parts = {"start, import, load, save, judge":
                 lambda v: v["seconds"] - v["train_seconds"] - v["generation_seconds"],
                 "warm-up + captures": lambda v: v["warmup_seconds"], "probes": lambda v: v["eval_seconds"],
                 "optimizer steps": lambda v: v["train_seconds"] - v["warmup_seconds"] - v["eval_seconds"],
                 "sampling (32 x 512 tokens)": lambda v: v["generation_seconds"]}
        left = [0.0] * len(done)
        for label, part in parts.items():
            vals = [part(v) for v in done]
            ax.barh([v["name"] for v in done], vals, left=left, label=label)
            left = [a + b for a, b in zip(left, vals)]
        ax.axvline(sweep["target_seconds"], color="r", ls="--", lw=0.8)
        ax.set_xlabel(f"seconds per variant, {sweep['jobs']} at once on one GPU ({sweep['done']}/{sweep['variants']} "
                      f"finished, then {sweep['status']}; red: the 180 s sweep target)")
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35))
        save_png(fig, HERE, "seed-workload-sweep.png")


def main() -> None:
    """Merge when --main is given, then redraw."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--main", type=Path, help="folder with the first call's seed-workload.json and -raw.json")
    p.add_argument("--extra", type=Path, help="folder with a second call's qlora-workload.json and -raw.json")
    args = p.parse_args()
    if args.main:
        merge(args.main, args.extra)
    figures()


if __name__ == "__main__":
    main()
