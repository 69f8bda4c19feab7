"""`asciitune bench --workload seed`: the seed workload's arms and an 8-variant concurrent sweep, in one call.

    asciitune bench --workload seed --config seed --model random:llama-3.2-3b --out reports/gpu-bench/seed-workload.json

Arms, each in its own process (`python -m harness.gpu.seed_arm`): the fast plan on Unsloth and on PEFT,
the seed plan on Unsloth (the reference for parity and speed-up), then the sweep: 8 variants of the
workload (train.lr values) through `asciitune run --jobs N train.plan=fast`, N processes at once on
the visible GPUs, each loading the model once and training, probing and sampling its share of the
variants one after another over the same CUDA graphs (N: 3, fewer if the fast Unsloth arm's peak memory
says so: jobs_for); then the fast plan with `model.load_in_4bit=true` (QLoRA) on both backends
and the seed plan on PEFT, with whatever time is left. Every item has a time cap inside --budget-s and
runs only if the items after it keep their reserve; a seed-plan arm stopped at its cap reports a
measured partial (its per-step time x the planned steps is given beside it, labelled as an
extrapolation). The document (issue 12's schema plus context) is rewritten after every item; per-step
losses and step times go to the `-raw.json` file beside it. Measured: reports/gpu-bench/README.md.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from harness.config import Plan, RunConfig
from harness.fsutil import atomic_write_json
from harness.procs import run_logged

SWEEP_TARGET_S = 180.0
SWEEP_LRS = (5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 4e-4, 6e-4, 8e-4)
GIB = 1024 ** 3


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


# Order is priority: the fast arms, the seed plan's reference (all 105 steps when time allows: parity and
# speedup need it), the sweep, then QLoRA and the seed plan on PEFT with whatever time is left.
SCHEDULE = (
    Item("fast-unsloth", "unsloth", "fast", False, 120, 0, 35),
    Item("fast-peft", "peft", "fast", False, 90, 35, 30),
    Item("seed-unsloth", "unsloth", "seed", False, 240, 60, 40),
    Item("sweep", max_s=200, reserve_s=190, min_s=60),
    Item("qlora-fast-unsloth", "unsloth", "fast", True, 90, 0, 35),
    Item("qlora-fast-peft", "peft", "fast", True, 80, 0, 30),
    Item("seed-peft", "peft", "seed", False, 240, 0, 25),  # all of it when the budget allows
    # The memory cap's cost, last: rows of up to 1024 tokens, and the whole step as one row (no cap); PEFT's
    # memory with rows half its default cap.
    Item("fast-unsloth-rows-1024", "unsloth", "fast", False, 90, 0, 35, micro_tokens=1024),
    Item("fast-unsloth-one-row", "unsloth", "fast", False, 90, 0, 35, micro_tokens=0),
    Item("fast-peft-rows-256", "peft", "fast", False, 90, 0, 30, micro_tokens=256),
)


def arm_config(base: RunConfig, item: Item) -> RunConfig:
    """The base config with the arm's backend, plan and 4-bit setting."""
    return replace(base, model=replace(base.model, backend=item.backend, load_in_4bit=item.load_in_4bit),
                   train=replace(base.train, plan=item.plan))


def cap_for(schedule: list[Item], i: int, left: float) -> float:
    """Seconds item i may run: its max, less what the later items reserve; 0 when under its minimum."""
    cap = min(schedule[i].max_s, left - sum(x.reserve_s for x in schedule[i + 1:]))
    return cap if cap >= schedule[i].min_s else 0.0


def toml_text(cfg: RunConfig, sweep: dict[str, list]) -> str:
    """A config file for `asciitune run`: every section's values, plus a [sweep] table (JSON scalars are TOML)."""
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("")
    for key, values in sweep.items():
        section, name = key.split(".")
        lines += [f"[sweep.{section}]", f"{name} = {json.dumps(list(values))}", ""]
    return "\n".join(lines)


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
    contention but no throughput; they pay off only while the others import, load or sit host-bound. With
    bytecode cached the 8-variant sweep took 177.7 s with 2 processes, 163.6-166.2 s with 3 (three runs) and
    168.2 s with 4 (H200, reports/gpu-bench/README.md)."""
    want = max(1, min(3, variants))
    if not peak_bytes or not total_bytes:
        return want
    return max(1, min(want, int(0.95 * total_bytes // (peak_bytes + GIB))))


def sweep_lrs(variants: int, base_lr: float, jobs: int) -> list[float]:
    """The sweep's lrs in config order, the base lr placed second in the first process (variants are dealt
    round-robin to the processes): its losses, against the fast arm's, show that replayed graphs train alike."""
    lrs = list(SWEEP_LRS[:variants]) if variants <= len(SWEEP_LRS) else [2e-4 * (1 + k / 10) for k in range(variants)]
    if base_lr in lrs and variants > jobs:
        lrs.remove(base_lr)
        lrs.insert(jobs, base_lr)
    return lrs


def run_sweep(base: RunConfig, work: Path, jobs: int, variants: int, cap: float) -> dict:
    """The sweep through `asciitune run --jobs`; wall time, per-variant times and statuses from its run folder."""
    cfg = replace(base, model=replace(base.model, backend="unsloth", load_in_4bit=False),
                  train=replace(base.train, plan="fast"))
    lrs = sweep_lrs(variants, base.train.lr, jobs)
    conf = work / "sweep.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(toml_text(cfg, {"train.lr": lrs}), encoding="utf-8")
    reports = work / "sweep-reports"
    cmd = [sys.executable, "-m", "harness", "--reports-dir", str(reports), "run", "--config", str(conf),
           "--jobs", str(jobs), "--no-report"]
    began = time.time()  # the variants' process start times are epoch seconds: their offsets from here
    status, wall = run_child(cmd, work / "logs" / "sweep.log", cap)
    text = (work / "logs" / "sweep.log").read_text(encoding="utf-8", errors="replace")
    seconds = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+): .* in (\d+)s\s*$", text, re.M)}
    results = sorted(reports.glob("runs/*/results.json"))
    found = json.loads(results[-1].read_text(encoding="utf-8")).get("variants", {}) if results else {}
    rows = []
    for name, v in found.items():
        t, g = v.get("train", {}), v.get("generation", {})
        rows.append({"name": name, "status": v.get("status"), "seconds": seconds.get(name),
                     "train_seconds": t.get("seconds"), "warmup_seconds": t.get("warmup_seconds"),
                     "eval_seconds": t.get("eval_seconds"), "generation_seconds": g.get("seconds"),
                     "decode": g.get("decode", ""),
                     "plan_reason": t.get("plan_reason"), "error": (v.get("error") or "")[-300:],
                     "pid": v.get("timing", {}).get("pid"), "phases": v.get("timing", {}).get("phases", {}),
                     "spawned_after_s": round(v["timing"]["spawned_at"] - began, 2)
                     if v.get("timing", {}).get("spawned_at") else None})
    base_lr = next((v for v in found.values() if v.get("config", {}).get("train", {}).get("lr") == base.train.lr), {})
    done = [r for r in rows if r["status"] == "done"]
    per = [r["seconds"] for r in done if r["seconds"] is not None]
    return {"variants": variants, "jobs": jobs, "wall_seconds": round(wall, 1), "status": status,
            "done": len(done), "sequential_seconds": round(sum(per), 1) if len(per) == variants else None,
            "sequential_note": "sum of each variant's own wall time measured inside this concurrent sweep (a "
                               "process's first variant from process start, the others from their start), so "
                               "an upper bound on running them one after another",
            "target_seconds": SWEEP_TARGET_S, "variant_lrs": lrs, "per_variant": rows,
            "_base_lr_losses": [x[1] for x in base_lr.get("curves", {}).get("running_train_loss", [])]}


def read_arm(path: Path, name: str) -> dict:
    """An arm's record, or a stub when it never wrote one."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"name": name, "status": "no record"}


def run_arm(base: RunConfig, item: Item, work: Path, cap: float, mode: str = "auto") -> dict:
    """One arm in its own process, stopped at cap; its record with status, wall time and, if it failed, log tail."""
    conf = atomic_write_json(work / "configs" / f"{item.name}.json", arm_config(base, item).to_dict())
    rec_path = work / "arms" / f"{item.name}-{mode}.json"
    rec_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "harness.gpu.seed_arm", "--config", str(conf), "--name", item.name,
           "--out", str(rec_path), "--mode", mode]
    if item.micro_tokens is not None:
        cmd += ["--micro-tokens", str(item.micro_tokens)]
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
    from harness.gpu.seed_summary import PARITY_RTOL, arm_row, parity, targets
    from harness.gpu.worker import card_info, measure_matmul_tflops
    from harness.models import resolve

    start = time.perf_counter()
    base = plan.base
    schedule = [x for x in SCHEDULE if not only or x.name in only]
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
                 "arms": [], "parity": {}, "sweep": None, "targets": {}, "skipped": []}
    raw: dict[str, dict] = {}
    rows: dict[str, dict] = {}
    sweep_raw: dict | None = None
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
        if item.name == "sweep":
            cap = min(item.max_s, left) if left >= item.min_s else 0.0
        if cap <= 0:
            doc["skipped"].append({"name": item.name, "why": f"{left:.0f} s left of the budget, under its minimum "
                                                             f"{item.min_s:.0f} s plus later items' reserve"})
            print(f"[bench] {item.name}: skipped ({left:.0f} s left)", flush=True)
            continue
        if item.name == "sweep":
            n = jobs or jobs_for(rows.get("fast-unsloth", {}).get("peak_reserved_bytes"),
                                 card.get("total_memory_bytes"), variants)
            print(f"[bench] sweep: {variants} variants, {n} at once, cap {cap:.0f} s", flush=True)
            doc["sweep"] = run_sweep(base, work, n, variants, cap)
            # The base-lr variant is the fast Unsloth arm's config run as `asciitune run` runs it, with probes
            # between steps and N neighbours on the GPU: its losses should repeat the arm's.
            again, arm = doc["sweep"].pop("_base_lr_losses"), raw.get("fast-unsloth", {}).get("losses")
            sweep_raw = {**doc["sweep"], "base_lr_losses": again}  # for a later merge with another call's arm
            if again and arm:
                doc["sweep"]["base_lr_vs_fast_unsloth_arm"] = compare_losses(again, arm, None, PARITY_RTOL)
            print(f"[bench] sweep: {doc['sweep']['done']}/{variants} done in {doc['sweep']['wall_seconds']} s "
                  f"({doc['sweep']['status']})", flush=True)
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
        doc["arms"] = list(rows.values())
        doc["parity"] = parity(raw)
        doc["targets"] = targets(rows, doc["parity"], doc["sweep"])
        doc["wall_seconds"] = round(time.perf_counter() - start, 1)
        _write(out, doc, {"arms": raw, "sweep": sweep_raw or doc["sweep"]})
    return doc
