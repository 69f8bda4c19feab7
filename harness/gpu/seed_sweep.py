"""The seed bench's sweeps (`asciitune bench --workload seed`, items sweep, sweep-solo, sweep-32): N variants of
the seed workload (train.lr values) run as `asciitune run` runs them, through the runner's Python API.

    sweep      the 8 variants: fast plan on Unsloth, by default in one multi-adapter engine (harness.train.multi)
    sweep-solo the same 8 trained alone on the fast plan, one after another in one process (harness.gpu.seed_arm):
               the reference for each sweep variant's per-step losses (`sweep.parity_max_rel_diff`)
    sweep-32   32 variants: how the sweep's wall time grows with K

Every number comes from the run's typed results (harness.results.VariantResult: timing phases, train and
generation stats, running losses), not from console text. A time cap stops the run's children as Ctrl-C would
(the local executor's Children), and what finished is still read, from the run's results.json when the runner
itself stopped with an error; every variant of the sweep is counted as finished, capped, failed or interrupted
(`outcomes`).
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

from harness.config import RunConfig

SWEEP_TARGET_S = 60.0  # the target: the 8-variant sweep (load, train, probe and sample each) in a minute on one H200
SWEEP_LRS = (5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 4e-4, 6e-4, 8e-4)


def sweep_lrs(variants: int, base_lr: float, jobs: int) -> list[float]:
    """The sweep's lrs in config order, the base lr placed second in the first process when variants are dealt
    round-robin to processes (--no-multi-adapter): its losses, against the fast arm's, show that replayed graphs
    train alike. Over 8 variants: 2e-4 x (1 + k/10), the base lr first."""
    lrs = list(SWEEP_LRS[:variants]) if variants <= len(SWEEP_LRS) else [2e-4 * (1 + k / 10) for k in range(variants)]
    if base_lr in lrs and variants > jobs:
        lrs.remove(base_lr)
        lrs.insert(jobs, base_lr)
    return lrs


def sweep_config(base: RunConfig) -> RunConfig:
    """The sweep's base: the seed workload on Unsloth's fast plan, bf16."""
    return replace(base, model=replace(base.model, backend="unsloth", load_in_4bit=False),
                   train=replace(base.train, plan="fast"))


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


# How a sweep variant ended, for the counts: "finished" (done), "capped" (stopped by the bench's time cap before it
# finished, started or not), "interrupted" (stopped otherwise: Ctrl-C, its process killed), "failed" (its own error).
OUTCOMES = ("finished", "capped", "failed", "interrupted")
STOP_MARKS = ("keyboardinterrupt", "stopped before it", "exit code -2", "exit code -15", "sigint", "sigterm")


def outcome(status: str | None, error: str | None, capped: bool) -> str:
    """One variant's outcome from its result's status and error (None: the sweep has no result for it)."""
    if status == "done":
        return "finished"
    stopped = status is None or any(m in (error or "").lower() for m in STOP_MARKS)
    if stopped:
        return "capped" if capped else "interrupted"
    return "failed"


def outcomes(names: list[str], found: dict, capped: bool) -> dict:
    """Every variant of the sweep counted once: {outcome: n}, and per outcome the variants' names."""
    per = {n: outcome(getattr(found.get(n), "status", None), getattr(found.get(n), "error", None), capped)
           for n in names}
    return {"counts": {o: sum(v == o for v in per.values()) for o in OUTCOMES},
            "by_outcome": {o: [n for n, v in per.items() if v == o] for o in OUTCOMES if o in per.values()}}


def read_results(reports: Path) -> dict:
    """The variants of the newest run under a reports folder, as its results.json holds them ({} if none)."""
    from harness.errors import UserError
    from harness.results import RESULTS_FILE, RUNS_DIR, from_dict

    for path in sorted((reports / RUNS_DIR).glob("*/" + RESULTS_FILE), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return from_dict(json.loads(path.read_text(encoding="utf-8"))).variants
        except (OSError, ValueError, TypeError, KeyError, UserError):
            continue
    return {}


class DevicePeak:
    """The most device memory in use on each GPU (nvidia-smi's memory.used, every process's) while a sweep runs,
    polled once a second from a thread: what the memory plan's estimate must stay above."""

    def __init__(self, every: float = 1.0) -> None:
        self.every, self.peak, self._stop = every, {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import shutil
        import subprocess

        smi = shutil.which("nvidia-smi")
        while smi and not self._stop.is_set():
            try:
                out = subprocess.run([smi, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                for line in out.splitlines():
                    idx, used = (x.strip() for x in line.split(","))
                    self.peak[idx] = max(self.peak.get(idx, 0), int(used) * 2 ** 20)
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self._stop.wait(self.every)

    def __enter__(self) -> DevicePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _row(name: str, v, began: float) -> dict:
    """One variant's row from its VariantResult."""
    t, g, tm = v.train, v.generation, v.timing
    return {"name": name, "lr": v.config.get("train", {}).get("lr"), "status": v.status,
            "seconds": round(sum(tm.phases.values()), 3) if tm.phases else None, "train_seconds": t.seconds,
            "warmup_seconds": t.warmup_seconds, "eval_seconds": t.eval_seconds, "steps": t.steps,
            "generation_seconds": g.seconds, "decode": g.decode,
            "train_peak_reserved_bytes": t.peak_memory_bytes, "sampled_with": g.shared_with, "engine": t.engine,
            "plan_reason": t.plan_reason, "error": (v.error or "")[-300:], "pid": tm.pid, "phases": tm.phases,
            "shared_phases": tm.shared, "spawned_after_s": round(tm.spawned_at - began, 2) if tm.spawned_at else None}


def processes(rows: list[dict]) -> list[dict]:
    """Per process of the sweep: its variants and where its wall time went (a shared phase once, the others summed)."""
    out = []
    for pid in dict.fromkeys(r["pid"] for r in rows if r["pid"]):
        mine = [r for r in rows if r["pid"] == pid]
        phases: dict[str, float] = {}
        for r in mine:
            for p, s in r["phases"].items():
                phases[p] = max(phases.get(p, 0.0), s) if p in r["shared_phases"] else phases.get(p, 0.0) + s
        out.append({"pid": pid, "variants": [r["name"] for r in mine], "engine": mine[0]["engine"],
                    "phases": {p: round(s, 3) for p, s in phases.items()}, "seconds": round(sum(phases.values()), 1)})
    return out


def run_sweep(base: RunConfig, work: Path, jobs: int, variants: int, cap: float, multi: bool = True,
              target: float | None = SWEEP_TARGET_S) -> dict:
    """The sweep through harness.train.runner.run_plan (local executor, `jobs` processes at most); wall time, each
    variant's phases, stats and losses read from its result; stopped at cap. target: its wall-time bound, if any."""
    from harness.config import load_plan as read_plan
    from harness.train.executors import Children, local_executor
    from harness.train.runner import run_plan

    lrs = sweep_lrs(variants, base.train.lr, jobs)
    tag = f"sweep-{variants}"
    conf = work / f"{tag}.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(toml_text(sweep_config(base), {"train.lr": lrs}), encoding="utf-8")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    plan = read_plan(str(conf))
    children, status, found = Children(), "ok", {}
    fired = threading.Event()  # the cap stopped the sweep (not Ctrl-C, not the runner's own error)
    timer = threading.Timer(cap, lambda: (fired.set(), children.stop()))
    began, t0 = time.time(), time.perf_counter()  # process start times are epoch seconds: their offsets from here
    timer.start()
    peak = DevicePeak()
    try:
        with open(work / "logs" / f"{tag}.log", "w", encoding="utf-8") as log, redirect_stdout(log), \
                redirect_stderr(log), peak:
            _, run = run_plan(plan, work / f"{tag}-reports", command=f"bench {tag}",
                              executor=local_executor(jobs, children), multi_adapter=multi)
        found = run.variants
    except Exception as exc:  # noqa: BLE001  (recorded; the bench goes on with its other items)
        status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        found = read_results(work / f"{tag}-reports")  # what the run wrote as each variant ended
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    capped = fired.is_set()
    if capped:
        status = f"stopped at its {cap:.0f} s cap"
    rows = [_row(name, v, began) for name, v in found.items()]
    losses = {name: {"lr": v.config.get("train", {}).get("lr"),
                     "losses": [x[1] for x in v.curves.running_train_loss]} for name, v in found.items()}
    base_lr = next((x["losses"] for x in losses.values() if x["lr"] == base.train.lr), [])
    counted = outcomes(list(plan.variants), found, capped)
    log_text = (work / "logs" / f"{tag}.log").read_text(encoding="utf-8", errors="replace")
    memory_plan = next((line.split("memory plan: ", 1)[1].strip() for line in log_text.splitlines()
                        if "memory plan: " in line), None)
    return {"variants": variants, "jobs": jobs, "engine": "multi-adapter" if multi else "one after another",
            "wall_seconds": round(wall, 1), "status": status, "done": counted["counts"]["finished"],
            **counted, "memory_plan": memory_plan, "device_memory_peak_bytes": peak.peak, "target_seconds": target,
            "variant_lrs": lrs,
            "processes": processes(rows), "per_variant": rows, "_losses": losses, "_base_lr_losses": base_lr}


def sweep_parity(losses: dict[str, dict], solo: dict[str, list[float]], rtol: float,
                 rerun: dict[str, list[float]] | None = None, fused: dict[str, list[float]] | None = None) -> dict:
    """Each sweep variant's per-step losses against the same lr trained alone with the same LoRA forwards (solo:
    repr(lr) -> losses), bounded per variant by max(rtol, the solo run's own rerun spread at that lr) where a rerun
    (rerun: the same lr trained alone again) was measured, else by rtol; the solo run with Unsloth's fused LoRA
    kernels (fused) against the plain one, and the variant against it, reported beside, not bounded."""
    from harness.gpu.parity import compare_losses

    def diff(a: list[float] | None, b: list[float] | None) -> float | None:
        return compare_losses(a, b, None, 1.0)["max_rel_diff"] if a and b else None

    per = {}
    for name, x in losses.items():
        key = repr(x["lr"])
        ref = solo.get(key)
        if ref and x["losses"]:
            spread = diff((rerun or {}).get(key), ref)
            bound = max(rtol, spread or 0.0)
            c = compare_losses(x["losses"], ref, None, bound)
            per[name] = {k: c[k] for k in ("steps_compared", "max_rel_diff", "mean_rel_diff", "worst_step", "ok")}
            per[name].update(complete=len(x["losses"]) == len(ref), bound=bound, rerun_spread=spread,
                             solo_fused_vs_plain=diff((fused or {}).get(key), ref),
                             vs_solo_fused=diff(x["losses"], (fused or {}).get(key)))
    worst = [v["max_rel_diff"] for v in per.values() if v["max_rel_diff"] is not None]
    return {"parity_max_rel_diff": max(worst) if worst else None, "tolerance": rtol,
            "parity_ok": bool(per) and len(per) == len(losses) and all(v["ok"] and v["complete"] for v in per.values()),
            "parity": per, "parity_bound": f"per variant max({rtol:.1%}, the solo run's rerun spread at its lr)",
            "parity_reference": "sweep-solo: each lr trained alone on the fast plan with the engine's LoRA forwards "
                                "(Unsloth's fused LoRA kernels declined where Unsloth runs); fused beside"}
