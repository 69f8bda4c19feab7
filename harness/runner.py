"""The main job: every variant of a plan, each in its own process, merged into one results.json.

    asciitune run                                   # default config: packaged model and cats, on CPU
    asciitune run --backend unsloth --model llama-3.2-3b --config seed   # the seed workflow on a GPU

Results go to reports/runs/<run-id>/. results.json is rewritten atomically after every
variant, so an interrupted run keeps what finished; `--resume RUN` skips those variants.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import environment
from harness.config import Plan, RunConfig
from harness.errors import UserError
from harness.fsutil import atomic_write_json
from harness.job import PROGRESS_MARK, variant_file
from harness.results import RESULTS_FILE, RunResult, VariantResult, from_dict, variant_from_dict

RUNS_DIR = "runs"


def new_run_id(cfg_hash: str) -> str:
    """Sortable, unique-enough id: UTC time plus the config hash."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + f"-{cfg_hash[:6]}"


def preflight(plan: Plan) -> dict:
    """Check data and model before any training starts, so bad input fails in one sentence, early."""
    from transformers import AutoTokenizer

    from harness.data import build_dataset, check_lengths, token_lengths
    from harness.models import resolve

    seen: dict[str, dict] = {}
    for cfg in plan.variants.values():
        key = json.dumps([cfg.data.__dict__, cfg.model.name, cfg.model.max_seq_length], sort_keys=True, default=str)
        if key in seen:
            continue
        ds = build_dataset(cfg.data)
        resolved = resolve(cfg.model.name)
        tok = AutoTokenizer.from_pretrained(resolved.tokenizer_path or resolved.path)
        check_lengths(ds.train + ds.heldout, token_lengths(ds.train + ds.heldout, tok), cfg.model.max_seq_length)
        seen[key] = {"dataset": ds}
    return next(iter(seen.values()))


def _child_command(name: str, cfg: RunConfig, run_dir: Path, resume_from: str | None) -> list[str]:
    cfg_file = run_dir / "configs" / f"{name}.json"
    atomic_write_json(cfg_file, cfg.to_dict())
    cmd = [sys.executable, "-m", "harness", "train", "--resolved-config", str(cfg_file), "--variant", name,
           "--run-dir", str(run_dir)]
    return cmd + (["--resume-from", str(resume_from)] if resume_from else [])


def _load_or_new(run_dir: Path, plan: Plan, command: str) -> RunResult:
    path = run_dir / RESULTS_FILE
    if path.is_file():
        return from_dict(json.loads(path.read_text(encoding="utf-8")))
    return RunResult(run_id=run_dir.name, created=datetime.now(UTC).isoformat(timespec="seconds"),
                     command=command, config_source=plan.source, base_config=plan.base.to_dict(),
                     config_hash=plan.base.hash())


def find_resumable(reports_dir: Path, plan: Plan) -> Path | None:
    """The newest run of the same config, for `--resume` without a run id."""
    runs = sorted((reports_dir / RUNS_DIR).glob("*/" + RESULTS_FILE), reverse=True)
    for path in runs:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("config_hash") == plan.base.hash():
                return path.parent
        except (OSError, ValueError):
            continue
    return None


def run_plan(plan: Plan, reports_dir: Path, resume: str | None = None, command: str = "",
             console=None, resume_from: str | None = None) -> tuple[Path, RunResult]:
    """Train every variant not yet done, one child process each; returns the run folder and results."""
    from harness.judge import human_reference

    say = console.print if console else print
    reports_dir = Path(reports_dir)
    if resume == "latest":
        run_dir = find_resumable(reports_dir, plan)
        if run_dir is None:
            raise UserError("No earlier run of this config to resume: drop --resume or name a run id.")
    elif resume:
        from harness.results import resolve_run_dir
        run_dir = resolve_run_dir(resume, reports_dir)
    else:
        run_dir = reports_dir / RUNS_DIR / new_run_id(plan.base.hash())
    pre = preflight(plan)
    run = _load_or_new(run_dir, plan, command)
    ds = pre["dataset"]
    run.data = ds.summary()
    run.human_reference = human_reference(ds)
    run.environment = environment.snapshot(run.environment.get("device", "") if run.environment else "")
    run.save(run_dir)
    say(f"Run {run_dir}: {len(plan.variants)} variant(s), {len(ds.train)} train / {len(ds.heldout)} held-out pieces")
    for i, (name, cfg) in enumerate(plan.variants.items(), 1):
        done = run.variants.get(name)
        if done and done.status == "done" and done.config_hash == cfg.hash():
            say(f"[{i}/{len(plan.variants)}] {name}: done earlier, skipped (--resume)")
            continue
        say(f"[{i}/{len(plan.variants)}] {name}: training on {cfg.model.backend} "
            f"(r={cfg.lora.r}, lr={cfg.train.lr:g}, epochs={cfg.train.epochs:g}, max_steps={cfg.train.max_steps})")
        t0 = time.perf_counter()
        result = _run_child(name, cfg, run_dir, resume_from)
        run.variants[name] = result
        if result.device and not run.environment.get("device"):
            run.environment["device"] = result.device
        run.save(run_dir)
        if result.status != "done":
            say(f"[{i}/{len(plan.variants)}] {name}: FAILED ({result.error.splitlines()[-1] if result.error else '?'})")
        else:
            say(f"[{i}/{len(plan.variants)}] {name}: {result.verdict.get('verdict', '?')} "
                f"in {time.perf_counter() - t0:.0f}s")
    return run_dir, run


def _run_child(name: str, cfg: RunConfig, run_dir: Path, resume_from: str | None) -> VariantResult:
    """Run one variant in a fresh process; on failure keep the tail of its output as the error."""
    out_file = variant_file(run_dir, name)
    out_file.unlink(missing_ok=True)
    log_path = run_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(_child_command(name, cfg, run_dir, resume_from), stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        try:
            tail = _follow(proc, log_path, name)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if proc.returncode == 0 and out_file.is_file():
        return variant_from_dict(json.loads(out_file.read_text(encoding="utf-8")))
    return VariantResult(name=name, status="failed", config=cfg.to_dict(), config_hash=cfg.hash(),
                         backend=cfg.model.backend, error=tail or f"exit code {proc.returncode}")


def _follow(proc: subprocess.Popen, log_path: Path, name: str) -> str:
    """Show the child's progress as a bar and echo its own lines; return the last lines of its log."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    pos = 0
    with Progress(TextColumn("   {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task(f"{name}: loading", total=None)
        while True:
            finished = proc.poll() is not None
            with open(log_path, encoding="utf-8", errors="replace") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
            for line in chunk.splitlines():
                if line.startswith(PROGRESS_MARK):
                    _, kind, done, total = line.split()
                    bar.update(task, description=f"{name}: {kind}", completed=int(done), total=int(total))
                elif line.startswith(f"[{name}] ") or line.startswith("error: "):
                    # The child's own summary lines; tqdm bars and library chatter stay in the log file.
                    bar.console.print("   " + line.strip(), highlight=False, markup=False)
            if finished:
                break
            time.sleep(0.5)
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    return errors[-1] if errors else "\n".join(ln for ln in lines[-15:] if not ln.startswith(PROGRESS_MARK))
