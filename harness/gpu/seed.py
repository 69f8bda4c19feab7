"""`asciitune bench --workload seed`: the seed workload's arms and its sweeps, in one call.

    asciitune bench --workload seed --config seed --model random:llama-3.2-3b --out reports/gpu-bench/seed-workload.json

Arms, each in its own process (`python -m harness.gpu.seed_arm`): the fast plan on Unsloth and on PEFT,
the seed plan on Unsloth (the reference for parity and speed-up), then the sweep: 8 variants of the
workload (train.lr values) run as `asciitune run train.plan=fast` runs them, through the runner's Python
API (harness.gpu.seed_sweep): all 8 trained, probed and sampled together in one process's multi-adapter
engine (harness.train.multi.plan); sweep-solo, the same 8 trained alone one after another, the reference for
each sweep variant's per-step losses (`sweep.parity_max_rel_diff`); sweep-32, 32 variants' wall time;
then the fast plan with `model.load_in_4bit=true` (QLoRA) on both backends and the seed plan on PEFT,
with whatever time is left. Every item has a time cap inside --budget-s and
runs only if the items after it keep their reserve; a seed-plan arm stopped at its cap reports a
measured partial (its per-step time x the planned steps is given beside it, labelled as an
extrapolation). The document (seed_summary's schema plus context) is rewritten after every item; per-step
losses and step times go to the `-raw.json` file beside it. Measured: reports/gpu-bench/README.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from harness.config import Plan, RunConfig
from harness.fsutil import atomic_write_json
from harness.gpu.seed_sweep import (  # noqa: F401  (SWEEP_LRS, SWEEP_TARGET_S, toml_text: re-exported)
    SWEEP_LRS,
    SWEEP_TARGET_S,
    run_sweep,
    sweep_lrs,
    sweep_parity,
    toml_text,
)
from harness.procs import run_logged

GIB = 1024 ** 3
SWEEPS = {"sweep": 8, "sweep-32": 32}  # sweep items and their variant counts (sweep: --variants)
# sweep-solo trains every lr with the engine's LoRA forwards (the reference), these lrs a second time (the run's own
# spread, which bounds the parity there; below 2e-4 a rerun differed by 0.046% at 5e-5, under the 0.5% floor:
# reports/gpu-bench/multi-adapter-h200/parity-summary.json), and SOLO_FUSED_LRS once more with Unsloth's fused LoRA
# kernels: the fused-vs-plain difference beside the parity (the parity control's lrs).
SOLO_RERUN_LRS = (2e-4, 3e-4, 4e-4, 6e-4, 8e-4)
SOLO_FUSED_LRS = (5e-5, 2e-4, 8e-4)


@dataclass(frozen=True)
class Item:
    """One scheduled item: an arm (backend, plan, 4-bit) or the sweep, with its time cap and reserve."""

    name: str
    backend: str = ""
    plan: str = ""
    load_in_4bit: bool = False
    max_s: float = 120.0  # its cap when time allows
    reserve_s: float = 30.0  # kept free for it by the items before it
    min_s: float = 25.0  # below this it is skipped, not started
    micro_tokens: int | None = None  # fast plan: the cap on a packed row (None: the backend's default)


# Order is priority: the fast arms, the seed plan's reference (every step when time allows: parity and
# speedup need it), the sweep, then QLoRA and the seed plan on PEFT with whatever time is left.
SCHEDULE = (
    Item("fast-unsloth", "unsloth", "fast", False, 120, 0, 35),
    Item("fast-peft", "peft", "fast", False, 90, 35, 30),
    Item("seed-unsloth", "unsloth", "seed", False, 240, 60, 40),
    Item("sweep", max_s=300, reserve_s=190, min_s=60),  # stopped at its cap it measures nothing: room to spare
    Item("sweep-solo", "unsloth", "fast", False, 240, 0, 60),  # the sweep's variants alone (twice), its reference
    Item("sweep-32", max_s=450, reserve_s=0, min_s=90),  # 32 need more than 8 (reports/gpu-bench/multi-adapter-h200)
    Item("qlora-fast-unsloth", "unsloth", "fast", True, 90, 0, 35),
    Item("qlora-fast-peft", "peft", "fast", True, 80, 0, 30),
    Item("seed-peft", "peft", "seed", False, 240, 0, 25),  # all of it when the budget allows
    # The memory cap's cost, last: rows of up to 1024 tokens, and the whole step as one row (no cap); PEFT with
    # rows a quarter and half its default cap.
    Item("fast-unsloth-rows-1024", "unsloth", "fast", False, 90, 0, 35, micro_tokens=1024),
    Item("fast-unsloth-one-row", "unsloth", "fast", False, 90, 0, 35, micro_tokens=0),
    Item("fast-peft-rows-256", "peft", "fast", False, 90, 0, 30, micro_tokens=256),
    Item("fast-peft-rows-512", "peft", "fast", False, 90, 0, 30, micro_tokens=512),  # the cap before 1024
)


def arm_config(base: RunConfig, item: Item) -> RunConfig:
    """The base config with the arm's backend, plan and 4-bit setting."""
    return replace(base, model=replace(base.model, backend=item.backend, load_in_4bit=item.load_in_4bit),
                   train=replace(base.train, plan=item.plan))


def cap_for(schedule: list[Item], i: int, left: float) -> float:
    """Seconds item i may run: its max, less what the later items reserve; 0 when under its minimum."""
    cap = min(schedule[i].max_s, left - sum(x.reserve_s for x in schedule[i + 1:]))
    return cap if cap >= schedule[i].min_s else 0.0


def run_child(cmd: list[str], log: Path, cap: float) -> tuple[str, float]:
    """Run cmd with output to log; at cap, stop it and its children as Ctrl-C would. Returns (status, seconds)."""
    t0 = time.perf_counter()
    try:
        code = run_logged(cmd, log, timeout=cap, grace=15)  # the runner stops its variants and keeps what finished
        status = "ok" if code == 0 else f"exit {code}"
    except subprocess.TimeoutExpired:
        status = f"stopped at its {cap:.0f} s cap"
    return status, time.perf_counter() - t0


def jobs_for(peak_bytes: int | None, total_bytes: int | None, variants: int) -> int:
    """Processes at once on one GPU: three (each trains its share of the variants over one load and one set of
    graphs), fewer if the fast arm's peak does not fit that often in 95% of the card, less 1 GiB each.

    Processes time-share one GPU (their kernels never overlap), so more of them add loads, warm-ups and
    contention but no throughput; they pay off only while the others import, load or sit host-bound. Three measured
    best for the 8-variant sweep: reports/gpu-bench/seed-workload.json, `sweep` and `other_sweeps`."""
    want = max(1, min(3, variants))
    if not peak_bytes or not total_bytes:
        return want
    return max(1, min(want, int(0.95 * total_bytes // (peak_bytes + GIB))))


def read_arm(path: Path, name: str) -> dict:
    """An arm's record, or a stub when it never wrote one."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"name": name, "status": "no record"}


def run_arm(base: RunConfig, item: Item, work: Path, cap: float, mode: str = "auto", extra: tuple = ()) -> dict:
    """One arm in its own process, stopped at cap; its record with status, wall time and, if it failed, log tail."""
    conf = atomic_write_json(work / "configs" / f"{item.name}.json", arm_config(base, item).to_dict())
    rec_path = work / "arms" / f"{item.name}-{mode}.json"
    rec_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "harness.gpu.seed_arm", "--config", str(conf), "--name", item.name,
           "--out", str(rec_path), "--mode", mode]
    if item.micro_tokens is not None:
        cmd += ["--micro-tokens", str(item.micro_tokens)]
    cmd += list(extra)
    log = work / "logs" / f"{item.name}-{mode}.log"
    status, wall = run_child(cmd, log, cap)
    rec = read_arm(rec_path, item.name)
    if status != "ok":
        if not str(rec.get("status")).startswith("refused"):
            rec["status"] = f"{rec.get('status')}; {status}"
        rec["log_tail"] = log.read_text(encoding="utf-8", errors="replace")[-1500:]
    rec["wall_seconds"] = round(wall, 1)
    return rec


def _write(out: Path, doc: dict, raw: dict) -> None:
    atomic_write_json(out, doc)
    atomic_write_json(out.with_name(out.stem + "-raw.json"), raw)


def run_seed_workload(plan: Plan, out: Path, work: Path, budget_s: float = 560.0, jobs: int | None = None,
                      variants: int = 8, only: list[str] | None = None, command: str = "") -> dict:
    """Every scheduled item within budget_s; the document is written to out after each one and returned."""
    from harness import environment
    from harness.backends.common import model_folder
    from harness.data import build_dataset
    from harness.gpu.bench import flops_per_token
    from harness.gpu.parity import compare_losses
    from harness.gpu.seed_summary import PARITY_RTOL, arm_row, parity, solo_parity, solo_row, targets
    from harness.gpu.worker import card_info, measure_matmul_tflops
    from harness.models import resolve

    start = time.perf_counter()
    base = plan.base
    # --arms names the items to run, in the order to run them (the call's priorities); else SCHEDULE's order.
    by_name = {x.name: x for x in SCHEDULE}
    schedule = [by_name[n] for n in dict.fromkeys(only) if n in by_name] if only else list(SCHEDULE)
    folder = model_folder(resolve(base.model.name), base)  # random weights written once, before any arm
    data = build_dataset(base.data).summary()  # the dataset changes with the harness: say which one ran
    card = card_info()
    peak_tflops = measure_matmul_tflops()
    workload = {"config": plan.source, "data": {k: data.get(k) for k in ("name", "hash", "n_train", "n_heldout")},
                "batch_size": base.train.batch_size, "grad_accum": base.train.grad_accum, "epochs": base.train.epochs,
                "max_seq_length": base.model.max_seq_length, "lora_r": base.lora.r}
    doc: dict = {"card": card.get("name", ""), "date": datetime.now(UTC).isoformat(timespec="seconds"),
                 "command": command, "model": base.model.name, "model_folder": str(folder), "workload": workload,
                 "card_info": card, "matmul_tflops": round(peak_tflops, 1), "environment": environment.snapshot(),
                 "budget_seconds": budget_s, "setup_seconds": round(time.perf_counter() - start, 1),
                 "arms": [], "parity": {}, "sweep": None, "sweep_solo": None, "sweep_32": None, "targets": {},
                 "skipped": []}
    raw: dict[str, dict] = {}
    rows: dict[str, dict] = {}
    sweeps_raw: dict[str, dict] = {}
    print(f"[bench] seed workload on {doc['card']} ({doc['matmul_tflops']} TFLOP/s bf16), model {folder}", flush=True)
    code = doc["environment"]["python_bytecode"]
    if not all(code["cached"].values()):  # every arm and sweep process would compile its imports again
        print(f"[bench] note: no cached bytecode for {', '.join(k for k, v in code['cached'].items() if not v)}"
              f"{' and PYTHONDONTWRITEBYTECODE is set' if code['dont_write_bytecode'] else ''}: each process "
              "compiles its imports again (about 20 s on the H200 image); `python -m compileall -q <site-packages>` "
              "once removes that", flush=True)
    for i, item in enumerate(schedule):
        left = budget_s - (time.perf_counter() - start)
        cap = cap_for(schedule, i, left)
        if item.name in SWEEPS:
            cap = min(item.max_s, left) if left >= item.min_s else 0.0
        if cap <= 0:
            doc["skipped"].append({"name": item.name, "why": f"{left:.0f} s left of the budget, under its minimum "
                                                             f"{item.min_s:.0f} s plus later items' reserve"})
            print(f"[bench] {item.name}: skipped ({left:.0f} s left)", flush=True)
            continue
        if item.name in SWEEPS:
            k = variants if item.name == "sweep" else SWEEPS[item.name]
            # Processes for variants that cannot share the multi-adapter engine (none in this sweep): as before.
            n = jobs or jobs_for(rows.get("fast-unsloth", {}).get("peak_reserved_bytes"),
                                 card.get("total_memory_bytes"), k)
            print(f"[bench] {item.name}: {k} variants through the multi-adapter engine, cap {cap:.0f} s", flush=True)
            rec = run_sweep(base, work, n, k, cap, target=SWEEP_TARGET_S if item.name == "sweep" else None)
            # The base-lr variant is the fast Unsloth arm's config run as `asciitune run` runs it, with probes
            # between steps and K-1 other adapters in the same kernels: its losses should repeat the arm's.
            losses, again = rec.pop("_losses"), rec.pop("_base_lr_losses")
            arm = raw.get("fast-unsloth", {}).get("losses")
            if again and arm:
                rec["base_lr_vs_fast_unsloth_arm"] = compare_losses(again, arm, None, PARITY_RTOL)
            doc["sweep" if item.name == "sweep" else "sweep_32"] = rec
            # for a later merge with another call's arm, and for the parity against sweep-solo
            sweeps_raw[item.name] = {**rec, "base_lr_losses": again, "losses": losses}
            print(f"[bench] {item.name}: {rec['done']}/{k} done in {rec['wall_seconds']} s ({rec['status']})",
                  flush=True)
        elif item.name == "sweep-solo":
            lrs = sweep_lrs(variants, base.train.lr, 1)
            fused = [x for x in lrs if x in SOLO_FUSED_LRS]
            rec = run_arm(base, item, work, cap, extra=("--sweep-lrs", ",".join(repr(x) for x in lrs),
                                                        "--sweep-reruns", ",".join(repr(x) for x in lrs
                                                                                   if x in SOLO_RERUN_LRS),
                                                        "--sweep-fused", ",".join(repr(x) for x in fused)))
            raw[item.name] = rec
            rows[item.name] = solo_row(rec, lrs)  # its arm, also when it runs alone
            doc["sweep_solo"] = {k: rec.get(k) for k in ("status", "wall_seconds", "load_s", "sweep_train_seconds",
                                                         "sweep_warmup_seconds", "sweep_fused_train_seconds",
                                                         "peak_reserved_bytes", "plan_reason", "lora_forward")}
            doc["sweep_solo"]["parity"] = solo_parity(rec)
            print(f"[bench] sweep-solo: {rec['status']} in {rec['wall_seconds']:.0f} s, "
                  f"{len(rec.get('sweep_losses') or {})}/{len(lrs)} variants", flush=True)
        else:
            rec = run_arm(base, item, work, cap)
            if item.load_in_4bit and item.plan == "fast" and rec["status"] != "ok" and card.get("cuda") \
                    and not str(rec["status"]).startswith("refused"):
                # CUDA graphs over bitsandbytes kernels are the new part: if capture fails, measure eager.
                left = budget_s - (time.perf_counter() - start)
                retry = cap_for(schedule, i, left)
                if retry > 0:
                    raw[item.name + "-graphs-failed"] = rec
                    rec = run_arm(base, item, work, retry, mode="eager")
            raw[item.name] = rec
            rows[item.name] = arm_row(rec, peak_tflops, flops_per_token)
            r = rows[item.name]
            print(f"[bench] {item.name}: {rec['status']} in {rec['wall_seconds']:.0f} s: {r['steps']}/"
                  f"{r['steps_planned']} steps, train {r['train_seconds']} s, warm-up {r['warmup_seconds']} s",
                  flush=True)
        solo = raw.get("sweep-solo", {})
        if doc["sweep"] and solo.get("sweep_losses") and "sweep" in sweeps_raw:  # each variant against its lr alone
            doc["sweep"].update(sweep_parity(sweeps_raw["sweep"]["losses"], solo["sweep_losses"], PARITY_RTOL,
                                             solo.get("sweep_rerun_losses"), solo.get("sweep_fused_losses")))
        doc["arms"] = list(rows.values())
        doc["parity"] = parity(raw)
        doc["targets"] = targets(rows, doc["parity"], doc["sweep"], doc.get("sweep_32"))
        doc["wall_seconds"] = round(time.perf_counter() - start, 1)
        _write(out, doc, {"arms": raw, "sweep": sweeps_raw.get("sweep") or doc["sweep"],
                          "sweep_32": sweeps_raw.get("sweep-32")})
    return doc
