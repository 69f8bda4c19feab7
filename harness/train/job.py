"""Variants, end to end, in a fresh process: load, train, save adapter, sample, judge.

    python -m harness.train.job RUN_DIR/jobs/NAME.json [MORE.json ...]   # what `asciitune run` starts

A process can hold only one backend (Unsloth patches transformers globally) and a crash then
costs its variants, not the run. The runner writes a job file per variant (its config, the run's
dataset and human reference, computed once per run) and starts this module on one or more of them;
each variant's result lands in `<run-dir>/variants/<name>.json` as it finishes, and the runner merges
it. Fast-plan variants over the same base (`share_key`) run one after another over one loaded model:
the model loads once and the CUDA graphs captured for the first are replayed by the rest (each starts
from the same LoRA weights and a zeroed optimizer: harness.train.fast_engine.Engine.begin). A variant
that fails is recorded and the next one starts over a freshly loaded model.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.data import Dataset
from harness.errors import UserError
from harness.fsutil import atomic_write_json
from harness.results import Scores, Timing, VariantResult, build, to_jsonable, write_jsonl

VARIANTS_DIR = "variants"
JOBS_DIR = "jobs"
PROGRESS_MARK = "@@progress"  # "@@progress KIND DONE TOTAL": the runner's progress bar
VARIANT_MARK = "@@variant"  # "@@variant NAME": this process starts NAME
DONE_MARK = "@@done"  # "@@done NAME": NAME's result file is written (done or failed)
SPAWNED_ENV = "ASCIITUNE_SPAWNED_AT"  # epoch seconds the executor started this process: the start phase's clock
_first_in_process = [True]


@dataclass
class Job:
    """Everything one variant's process needs, handed over whole (no re-reading, no re-building)."""

    name: str
    config: RunConfig
    run_dir: Path
    dataset: Dataset
    human_reference: Scores
    resume_from: str | None = None
    seed_group: str = ""  # the variant this job is a seed replicate of (config.Plan.seed_groups), else ""

    def write(self) -> Path:
        """The job file the child process reads."""
        data = {"name": self.name, "config": self.config.to_dict(), "run_dir": str(self.run_dir),
                "dataset": self.dataset.to_dict(), "human_reference": to_jsonable(self.human_reference),
                "resume_from": self.resume_from, "seed_group": self.seed_group}
        return atomic_write_json(Path(self.run_dir) / JOBS_DIR / f"{self.name}.json", data)

    @classmethod
    def read(cls, path: str | Path) -> Job:
        """Load a job file written by `write`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["name"], RunConfig.from_dict(data["config"]), Path(data["run_dir"]),
                   Dataset.from_dict(data["dataset"]), build(Scores, data["human_reference"]), data.get("resume_from"),
                   data.get("seed_group") or "")


def variant_file(run_dir: Path, name: str) -> Path:
    """Where a finished variant's result is written."""
    return Path(run_dir) / VARIANTS_DIR / f"{name}.json"


def progress(kind: str, done: int, total: int) -> None:
    """A machine-readable line the runner turns into a progress bar."""
    print(f"{PROGRESS_MARK} {kind} {done} {total}", file=sys.stderr, flush=True)


def share_key(job: Job) -> str | None:
    """Jobs with equal keys may share a process and its loaded model: fast-plan variants over one base and LoRA."""
    cfg = job.config
    if cfg.train.plan != "fast" or job.resume_from:
        return None
    d = cfg.to_dict()
    return json.dumps([d["model"], d["lora"]], sort_keys=True)


class Clock:
    """A variant's Timing: wall seconds per phase, each phase from the end of the one before."""

    def __init__(self) -> None:
        spawned = float(os.environ.get(SPAWNED_ENV) or 0)
        self.timing = Timing(pid=os.getpid(), spawned_at=spawned)
        if spawned and _first_in_process[0]:  # interpreter start and imports, before this variant's own work
            self.timing.phases["start"] = round(max(0.0, time.time() - spawned), 3)
        _first_in_process[0] = False
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The phase that just ended."""
        now = time.perf_counter()
        self.timing.phases[phase] = round(self.timing.phases.get(phase, 0.0) + now - self.last, 3)
        self.last = now


class Session:
    """What a process keeps between its jobs: the loaded model, its tokenizer, and the fast plan's engine."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.model = self.tok = self.info = self.engine = None

    def drop(self) -> None:
        """Forget the model (after a failure, or before a job over another base): its memory goes back."""
        if self.engine is not None:
            self.engine.close()
        self.key = self.model = self.tok = self.info = self.engine = None
        gc.collect()
        if cuda := _loaded_cuda():
            cuda.empty_cache()


def failed_result(job: Job, error: str) -> VariantResult:
    """A failed variant's result with its one-line error; out of memory says what to change."""
    if "out of memory" in error.lower():  # concurrent variants share a GPU
        error = f"Out of memory (lower --jobs or train.batch_size): {error.splitlines()[-1]}"
    cfg = job.config
    return VariantResult(name=job.name, status="failed", config=cfg.to_dict(), config_hash=cfg.hash(),
                         backend=cfg.model.backend, error=error, seed_group=job.seed_group)


def run_job(job: Job, session: Session | None = None) -> VariantResult:
    """Train and judge one variant in this process; the backend is imported first, as Unsloth requires.

    session: the process's Session when it runs several jobs; a shareable job reuses its model and engine.
    """
    from harness import backends

    clock = Clock()
    cfg, name, run_dir, ds = job.config, job.name, Path(job.run_dir), job.dataset
    backend = backends.get(cfg.model.backend)
    from harness.judge.judge import judge
    from harness.judge.reference import for_run
    from harness.judge.verdict import analyse, combine_verdicts
    from harness.models import resolve
    from harness.train.generate import generate_samples
    from harness.train.sft import log_scores, train_variant

    train = train_variant
    load_cfg = cfg
    if cfg.train.plan == "fast":  # the same step math, executed fast (harness.train.fast); refused up front if not
        from harness.train import fast

        fast.check(cfg)
        train, load_cfg = fast.train_variant_fast, fast.load_config(cfg)
    key = share_key(job) if session else None
    reuse = key is not None and session.key == key
    if session and not reuse:
        session.drop()
    if cuda := _loaded_cuda():
        cuda.reset_peak_memory_stats()  # each variant's peak, also when it shares a process
    result = VariantResult(name=name, config=cfg.to_dict(), config_hash=cfg.hash(), backend=cfg.model.backend,
                           data_hash=ds.hash(), seed_group=job.seed_group)
    if reuse:
        model, tok, info = session.model, session.tok, session.info
    elif job.resume_from:
        model, tok, info = backend.load_adapter(job.resume_from, resolve(cfg.model.name), load_cfg, is_trainable=True)
    else:
        model, tok, info = backend.load(resolve(cfg.model.name), load_cfg)
    clock.mark("load")
    note = f"continued from {job.resume_from}" if job.resume_from else ""
    if reuse:
        note = "model shared with the variant before it in this process (loaded once, graphs captured once)"
    result.backend_note = "; ".join(x for x in (info["backend_note"], note) if x)
    result.device = info["device"]
    print(f"[{name}] {info['backend_note']} on {info['device']} ({info['dtype']}); "
          f"{len(ds.train)} train / {len(ds.heldout)} held-out pieces", file=sys.stderr, flush=True)

    def report(step: int, tr: float, ho: float) -> None:
        print(f"[{name}] step {step}: train loss {tr:.4f}, held-out loss {ho:.4f}", file=sys.stderr, flush=True)

    backend.for_training(model)
    extra = {}
    if key is not None:  # kept for the next job over this base; its engine made before any step, at LoRA's start
        if not reuse:
            session.key, session.model, session.tok, session.info = key, model, tok, info
            session.engine = fast.Engine(model, cfg.train)
        extra["engine"] = session.engine
    result.curves, result.train = train(model, tok, ds, cfg, run_dir / "checkpoints" / name, on_eval=report,
                                        on_step=lambda d, t: progress("train", d, t), **extra)
    clock.mark("train")
    adapter_dir = run_dir / "adapters" / name
    model.save_pretrained(str(adapter_dir))
    tok.save_pretrained(str(adapter_dir))
    atomic_write_json(adapter_dir / "asciitune-config.json", {"variant": name, "config": cfg.to_dict()})
    result.adapter_dir = str(adapter_dir.relative_to(run_dir))
    result.loss_analysis = analyse(result.curves.steps, result.curves.train_loss, result.curves.heldout_loss)
    clock.mark("save")

    backend.for_inference(model)
    counts = backend.decode_counts(model)
    progress("generate", 0, cfg.generate.n_samples)
    samples, result.generation = generate_samples(model, tok, cfg.generate,
                                                  progress=lambda d: progress("generate", d, cfg.generate.n_samples))
    result.generation.decode = backend.decode_mode(model, counts)
    clock.mark("generate")
    judged = judge(for_run(ds, job.human_reference), [s.text for s in samples], [s.cut_off for s in samples],
                   meta=[asdict(s) for s in samples])
    result.scores, result.copy_analysis, result.judge_version = judged.scores, judged.copy, judged.version
    result.verdict = combine_verdicts(result.loss_analysis, judged.copy)
    log_scores(cfg, run_dir / "checkpoints" / name, result)  # beside the curves, when train.report_to asks
    result.samples_file = f"samples-{name}.jsonl"
    write_jsonl(run_dir / result.samples_file, [r.to_dict() for r in judged.rows])
    result.status = "done"
    clock.mark("judge")
    result.timing = clock.timing
    atomic_write_json(variant_file(run_dir, name), to_jsonable(result))
    return result


def _loaded_cuda():
    """torch.cuda when torch is already imported and a GPU is usable, else None (never imports torch itself)."""
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            return torch.cuda
    return None


def run_jobs(jobs: list[Job]) -> int:
    """Each job in turn in this process, marked for the runner; a failed one is recorded and the rest go on."""
    session, code = Session(), 0
    for job in jobs:
        print(f"{VARIANT_MARK} {job.name}", file=sys.stderr, flush=True)
        try:
            result = run_job(job, session)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            result, code = failed_result(job, str(exc)), 2
        except Exception as exc:  # noqa: BLE001  (any failure is this variant's; the next starts clean)
            traceback.print_exc()
            print(f"[{job.name}] failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  file=sys.stderr, flush=True)
            result, code = failed_result(job, f"{type(exc).__name__}: {exc}"), max(code, 1)
        if result.status != "done":
            session.drop()
            atomic_write_json(variant_file(job.run_dir, job.name), to_jsonable(result))
        print(f"{DONE_MARK} {job.name}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Child entry point: run the job files in order; a user error ends in one sentence, like the CLI."""
    from harness.quiet import quiet_third_party

    quiet_third_party()
    p = argparse.ArgumentParser(prog="python -m harness.train.job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jobs", type=Path, nargs="+", help="job files written by the runner (RUN_DIR/jobs/NAME.json)")
    args = p.parse_args(argv)
    return run_jobs([Job.read(path) for path in args.jobs])


if __name__ == "__main__":
    sys.exit(main())
