"""Assemble seed-workload.json from the GPU calls' raw files, and redraw its figures (CPU, no GPU needed).

    python reports/gpu-bench/make_seed_workload.py                          # figures from the committed files
    python reports/gpu-bench/make_seed_workload.py --calls DIR1 DIR2 ...    # merge calls' outputs first

`asciitune bench --workload seed` writes seed-workload.json and seed-workload-raw.json in one call. A call
has at most 10 minutes, less than every arm and the sweep together, so the committed document joins the
calls (one card kind, the same random-weight folder, checked by the first step's loss; a DIR may hold an
earlier merge): each DIR holds one call's seed-workload.json and -raw.json (and, if present, setup.txt:
the call's setup log, kept); an arm measured by a later call replaces an earlier one, the sweep is the
last call's that ran one. Rows, parity and targets are recomputed here by harness.gpu.seed_summary from
the merged raw records; each arm says which call measured it.
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
    from harness.gpu.parity import compare_losses
    from harness.gpu.seed_summary import PARITY_RTOL

    doc, raw, peaks, first_loss, skipped, sweep_raw = None, {}, {}, {}, [], None
    history: list[dict] = []
    for folder in calls:
        cdoc = json.loads((folder / "seed-workload.json").read_text())
        craw = json.loads((folder / "seed-workload-raw.json").read_text())
        if doc is None:
            doc = {k: v for k, v in cdoc.items() if k not in ("calls", "sweep", "other_sweeps")}
        # A folder may hold an earlier merge (its "calls" listed): its arms keep the call that measured them.
        earlier = cdoc.get("calls") or []
        k = len(history) + max(1, len(earlier))
        setup = folder / "setup.txt"  # the call's own log of its setup (e.g. compileall), kept verbatim
        history += earlier or [{"call": k, "date": cdoc["date"], "command": cdoc["command"],
                                "matmul_tflops": cdoc["matmul_tflops"], "wall_seconds": cdoc.get("wall_seconds"),
                                **({"setup_log": setup.read_text().strip()} if setup.is_file() else {})}]
        for name, rec in craw["arms"].items():
            if not (earlier and rec.get("measured_in")):
                rec["measured_in"] = (f"call {k} ({cdoc['date']}, random-weight folder "
                                      f"{Path(cdoc['model_folder']).name})")
            raw[name] = rec
            was = int(rec["measured_in"].split()[1]) if earlier else k  # "call N (...": its call's matmul peak
            peaks[name] = next((c["matmul_tflops"] for c in history if c["call"] == was), cdoc["matmul_tflops"])
            if rec.get("losses") and not rec.get("load_in_4bit"):  # 4-bit arms load another (nearby) model
                first_loss[name] = rec["losses"][0]
        skipped += [x if "call" in x else x | {"call": k} for x in cdoc.get("skipped", [])]
        if cdoc.get("sweep"):  # the last sweep is the sweep; earlier ones stay on record, in brief
            others = doc.setdefault("other_sweeps", [])
            others += cdoc.get("other_sweeps", [])
            if doc.get("sweep"):
                others.append({key: doc["sweep"].get(key) for key in ("jobs", "variants", "done", "wall_seconds",
                                                                      "status", "measured_in", "bytecode_cached")})
            # Process starts hang on cached bytecode (the GPU image writes none): say which sweeps had it.
            code = (cdoc.get("environment") or {}).get("python_bytecode")
            doc["sweep"] = cdoc["sweep"] if earlier else cdoc["sweep"] | {
                "measured_in": f"call {k} ({cdoc['date']})",
                "bytecode_cached": all(code["cached"].values()) if code else None}
            sweep_raw = craw.get("sweep") or {}
    doc["calls"] = history
    # The sweep's base-lr variant against the fast Unsloth arm, also when another call measured the arm.
    again, arm = (sweep_raw or {}).get("base_lr_losses"), raw.get("fast-unsloth", {}).get("losses")
    if again and arm:
        doc["sweep"]["base_lr_vs_fast_unsloth_arm"] = compare_losses(again, arm, None, PARITY_RTOL)
        first_loss["sweep base-lr variant"] = again[0]
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
    atomic_write_json(RAW, {"arms": raw, "sweep": {**doc["sweep"], **({"base_lr_losses": again} if again else {})}})


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
    if variants and all(v["status"] == "done" and v.get("phases") and v.get("pid") for v in variants):
        sweep_timeline(doc, sweep, variants)  # variants that record their phases (asciitune since this sweep)


PHASES = {  # label: (colour, seconds of one variant)
    "interpreter and imports": ("#c7c7c7", lambda v: v["phases"].get("start", 0.0)),
    "backend import + model load": ("#7f7f7f", lambda v: v["phases"].get("load", 0.0)),
    "warm-up + graph captures": ("#ff7f0e", lambda v: v["warmup_seconds"] or 0.0),
    "probes (11 eval points)": ("#2ca02c", lambda v: v["eval_seconds"] or 0.0),
    "optimizer steps": ("#d62728", lambda v: v["phases"]["train"] - (v["warmup_seconds"] or 0)
                        - (v["eval_seconds"] or 0)),
    "save, judge": ("#17becf", lambda v: v["phases"].get("save", 0.0) + v["phases"].get("judge", 0.0)),
    "sampling (32 x 512 tokens)": ("#9467bd", lambda v: v["phases"].get("generate", 0.0)),
}


def sweep_timeline(doc: dict, sweep: dict, variants: list[dict]) -> None:
    """One row per process, in seconds since `asciitune run` started, from the variants' measured phases."""
    pids = list(dict.fromkeys(v["pid"] for v in variants))
    fig = Figure(figsize=(10, 1.2 + 0.55 * (len(pids) + 1)), layout="constrained")
    ax = fig.subplots()
    spawn = min(v["spawned_after_s"] for v in variants)
    ax.barh(0, spawn, color="#bcbd22", label="the runner: imports, dataset, human reference, length check")
    shown = set()
    for row, pid in enumerate(pids, 1):
        t = next(v["spawned_after_s"] for v in variants if v["pid"] == pid)
        for v in (v for v in variants if v["pid"] == pid):
            ax.text(t + 1, row + 0.42, v["name"], fontsize=7, va="bottom")
            for label, (color, part) in PHASES.items():
                width = max(0.0, part(v))
                ax.barh(row, width, left=t, color=color, label=None if label in shown else label)
                shown.add(label)
                t += width
    ax.axvline(sweep["target_seconds"], color="r", ls="--", lw=0.8)
    ax.axvline(sweep["wall_seconds"], color="k", ls=":", lw=0.8)
    ax.set_yticks(range(len(pids) + 1), ["runner"] + [f"process {k}" for k in range(1, len(pids) + 1)])
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds since `asciitune run` started (red: the {sweep['target_seconds']:.0f} s target; dotted: "
                  f"the sweep's wall time, {sweep['wall_seconds']} s, process exits included)")
    ax.set_title(f"8-variant sweep: `asciitune run --jobs {sweep['jobs']} train.plan=fast` on one {doc['card']}: "
                 f"{sweep['jobs']} processes, each loading once and replaying its CUDA graphs", fontsize=9)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.28))
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
