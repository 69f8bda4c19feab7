"""Assemble seed-workload.json from the GPU calls' raw files, and redraw its figures (CPU, no GPU needed).

    python reports/gpu-bench/make_seed_workload.py                          # figures from the committed files
    python reports/gpu-bench/make_seed_workload.py --calls DIR1 DIR2 ...    # merge calls' outputs first

`asciitune bench --workload seed` writes seed-workload.json and seed-workload-raw.json in one call. A call
has at most 10 minutes, less than every arm and the sweep together, so the committed document joins the
calls of one session (one H200, the same random-weight folder, checked by the first step's loss): each DIR
holds one call's seed-workload.json and -raw.json; an arm measured by a later call replaces an earlier
one, the sweep is the last call's that ran one. Rows, parity and targets are recomputed here by
harness.gpu.seed_summary from the merged raw records; each arm says which call measured it.
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


def merge(calls: list[Path]) -> None:
    """seed-workload.json (+ -raw) from the calls' files, in order: later arms replace earlier ones."""
    from harness.gpu.bench import flops_per_token

    doc, raw, peaks, first_loss, skipped = None, {}, {}, {}, []
    for k, folder in enumerate(calls, 1):
        cdoc = json.loads((folder / "seed-workload.json").read_text())
        craw = json.loads((folder / "seed-workload-raw.json").read_text())
        if doc is None:
            doc = cdoc
        for name, rec in craw["arms"].items():
            rec["measured_in"] = f"call {k} ({cdoc['date']}, random-weight folder {Path(cdoc['model_folder']).name})"
            raw[name], peaks[name] = rec, cdoc["matmul_tflops"]
            if rec.get("losses") and not rec.get("load_in_4bit"):  # 4-bit arms load another (nearby) model
                first_loss[name] = rec["losses"][0]
        skipped += [x | {"call": k} for x in cdoc.get("skipped", [])]
        if cdoc.get("sweep"):
            doc["sweep"] = cdoc["sweep"] | {"measured_in": f"call {k} ({cdoc['date']})"}
        doc.setdefault("calls", []).append({"call": k, "date": cdoc["date"], "command": cdoc["command"],
                                            "matmul_tflops": cdoc["matmul_tflops"],
                                            "wall_seconds": cdoc.get("wall_seconds")})
    # The same weights in every call: a step-1 loss off by more than the parity bound would say otherwise.
    spread = max(first_loss.values()) / min(first_loss.values()) - 1 if first_loss else 0.0
    doc["same_weights_check"] = {"first_step_loss_spread": round(spread, 6), "arms": len(first_loss)}
    rows = {}
    for name, rec in raw.items():
        rows[name] = {**arm_row(rec, peaks[name], flops_per_token), "measured_in": rec["measured_in"]}
    doc["arms"] = list(rows.values())
    doc["parity"] = parity(raw)
    doc["targets"] = targets(rows, doc["parity"], doc["sweep"])
    doc["skipped"] = [x for x in skipped if x["name"] not in raw]
    atomic_write_json(DOC, doc)
    atomic_write_json(RAW, {"arms": raw, "sweep": doc["sweep"]})


def figures() -> None:
    """seed-workload-time.png (steps and warm-up per arm), -parity.png (per-step losses), -sweep.png."""
    doc, raw = json.loads(DOC.read_text()), json.loads(RAW.read_text())["arms"]
    rows = doc["arms"]
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax, mx = fig.subplots(1, 2, width_ratios=[3, 2], sharey=True)
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
    ax.set_xlim(1, 3 * max(s + w for s, w in zip(steps, warm)))  # a log axis cannot show 0; room for labels
    ax.set_xlabel("seconds (log scale)")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Seed workload on one {doc['card']}: {rows[0]['steps_planned']} optimizer steps", fontsize=9)
    gib = [(r["peak_reserved_bytes"] or 0) / 2**30 for r in rows]
    mx.barh(names, gib, color="#2ca02c")
    for i, g in enumerate(gib):
        mx.text(g, i, f" {g:.1f}", va="center", fontsize=8)
    seed_peak = next((r["peak_reserved_bytes"] for r in rows if r["name"] == REFERENCE), None)
    if seed_peak:
        mx.axvline(1.5 * seed_peak / 2**30, color="r", ls="--", lw=0.8)
    mx.set_xlabel("peak reserved GiB, weights included\n(red: the seed plan's + 50%)")
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
    variants = sweep.get("per_variant", [])
    if variants and all(v["status"] == "done" and v["seconds"] for v in variants):
        # `asciitune run --jobs N` deals the variants round-robin to N processes (harness.train.executors.units),
        # each training its share one after another: one timeline row per process.
        jobs = sweep["jobs"]
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        ax = fig.subplots()
        parts = {"start, import, load (first variant), save, judge":
                 lambda v: v["seconds"] - v["train_seconds"] - v["generation_seconds"],
                 "warm-up + graph captures": lambda v: v["warmup_seconds"], "probes": lambda v: v["eval_seconds"],
                 "optimizer steps": lambda v: v["train_seconds"] - v["warmup_seconds"] - v["eval_seconds"],
                 "sampling (32 x 512 tokens)": lambda v: v["generation_seconds"]}
        colors = dict(zip(parts, ("#7f7f7f", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")))
        for u in range(jobs):
            t = 0.0
            for v in variants[u::jobs]:
                start = t
                for label, part in parts.items():
                    width = part(v)
                    ax.barh(u, width, left=t, color=colors[label], label=label if u == 0 and start == 0 else None)
                    t += width
                ax.text(start + 1, u + 0.42, v["name"], fontsize=7, va="bottom")
        ax.axvline(sweep["target_seconds"], color="r", ls="--", lw=0.8)
        ax.set_yticks(range(jobs), [f"process {u + 1}" for u in range(jobs)])
        ax.invert_yaxis()
        longest = max(sum(v["seconds"] for v in variants[u::jobs]) for u in range(jobs))
        ax.set_xlabel(f"seconds since the processes started; the sweep's {sweep['wall_seconds']} s wall also holds "
                      f"~{sweep['wall_seconds'] - longest:.0f} s of the runner's own (imports, dataset, human "
                      f"reference) before them (red: the {sweep['target_seconds']:.0f} s target)")
        ax.set_title(f"8-variant sweep: `asciitune run --jobs {jobs} train.plan=fast`, {jobs} processes on one "
                     f"{doc['card']}, each loading once and replaying its CUDA graphs", fontsize=9)
        ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        save_png(fig, HERE, "seed-workload-sweep.png")


def main() -> None:
    """Merge when --calls is given, then redraw."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=Path, nargs="+", help="folders with one call's seed-workload.json and -raw.json")
    args = p.parse_args()
    if args.calls:
        merge(args.calls)
    figures()


if __name__ == "__main__":
    main()
