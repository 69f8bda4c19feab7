"""One variant, end to end, in a fresh process: load, train, save adapter, sample, judge.

    python -m harness.train.job RUN_DIR/jobs/NAME.json      # what `asciitune run` starts per variant

A process can hold only one backend (Unsloth patches transformers globally) and a crash then
costs one variant, not the run. The runner writes a job file (the variant's config, the run's
dataset and human reference, computed once per run) and starts this module on it; the
variant's result lands in `<run-dir>/variants/<name>.json` and the runner merges it.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.data import Dataset
from harness.fsutil import atomic_write_json
from harness.results import Scores, VariantResult, build, to_jsonable, write_jsonl

VARIANTS_DIR = "variants"
JOBS_DIR = "jobs"
PROGRESS_MARK = "@@progress"


@dataclass
class Job:
    """Everything one variant's process needs, handed over whole (no re-reading, no re-building)."""

    name: str
    config: RunConfig
    run_dir: Path
    dataset: Dataset
    human_reference: Scores
    resume_from: str | None = None

    def write(self) -> Path:
        """The job file the child process reads."""
        data = {"name": self.name, "config": self.config.to_dict(), "run_dir": str(self.run_dir),
                "dataset": self.dataset.to_dict(), "human_reference": to_jsonable(self.human_reference),
                "resume_from": self.resume_from}
        return atomic_write_json(Path(self.run_dir) / JOBS_DIR / f"{self.name}.json", data)

    @classmethod
    def read(cls, path: str | Path) -> Job:
        """Load a job file written by `write`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["name"], RunConfig.from_dict(data["config"]), Path(data["run_dir"]),
                   Dataset.from_dict(data["dataset"]), build(Scores, data["human_reference"]), data.get("resume_from"))


def variant_file(run_dir: Path, name: str) -> Path:
    """Where a finished variant's result is written."""
    return Path(run_dir) / VARIANTS_DIR / f"{name}.json"


def progress(kind: str, done: int, total: int) -> None:
    """A machine-readable line the runner turns into a progress bar."""
    print(f"{PROGRESS_MARK} {kind} {done} {total}", file=sys.stderr, flush=True)


def run_job(job: Job) -> VariantResult:
    """Train and judge one variant in this process; the backend is imported first, as Unsloth requires."""
    from harness import backends

    cfg, name, run_dir, ds = job.config, job.name, Path(job.run_dir), job.dataset
    backend = backends.get(cfg.model.backend)
    from harness.judge.samples import judge_samples
    from harness.judge.verdict import analyse
    from harness.models import resolve
    from harness.train.generate import generate_samples
    from harness.train.sft import log_scores, train_variant

    train = train_variant
    load_cfg = cfg
    if cfg.train.plan == "fast":  # the same step math, executed fast (harness.train.fast); refused up front if not
        from harness.train import fast

        fast.check(cfg)
        train, load_cfg = fast.train_variant_fast, fast.load_config(cfg)
    result = VariantResult(name=name, config=cfg.to_dict(), config_hash=cfg.hash(), backend=cfg.model.backend)
    resolved = resolve(cfg.model.name)
    if job.resume_from:
        model, tok, info = backend.load_adapter(job.resume_from, resolved, load_cfg, is_trainable=True)
    else:
        model, tok, info = backend.load(resolved, load_cfg)
    note = f"continued from {job.resume_from}" if job.resume_from else ""
    result.backend_note = "; ".join(x for x in (info["backend_note"], note) if x)
    result.device = info["device"]
    print(f"[{name}] {info['backend_note']} on {info['device']} ({info['dtype']}); "
          f"{len(ds.train)} train / {len(ds.heldout)} held-out pieces", file=sys.stderr, flush=True)

    def report(step: int, tr: float, ho: float) -> None:
        print(f"[{name}] step {step}: train loss {tr:.4f}, held-out loss {ho:.4f}", file=sys.stderr, flush=True)

    backend.for_training(model)
    result.curves, result.train = train(model, tok, ds, cfg, run_dir / "checkpoints" / name, on_eval=report,
                                        on_step=lambda d, t: progress("train", d, t))
    adapter_dir = run_dir / "adapters" / name
    model.save_pretrained(str(adapter_dir))
    tok.save_pretrained(str(adapter_dir))
    atomic_write_json(adapter_dir / "asciitune-config.json", {"variant": name, "config": cfg.to_dict()})
    result.adapter_dir = str(adapter_dir.relative_to(run_dir))
    result.loss_analysis = analyse(result.curves.steps, result.curves.train_loss, result.curves.heldout_loss)

    backend.for_inference(model)
    progress("generate", 0, cfg.generate.n_samples)
    samples, result.generation = generate_samples(model, tok, cfg.generate,
                                                  progress=lambda d: progress("generate", d, cfg.generate.n_samples))
    judged = judge_samples([asdict(s) for s in samples], ds, job.human_reference, result.loss_analysis.verdict)
    result.scores, result.copy_analysis, result.verdict = judged.scores, judged.copy, judged.verdict
    log_scores(cfg, run_dir / "checkpoints" / name, result)  # beside the curves, when train.report_to asks
    result.samples_file = f"samples-{name}.jsonl"
    write_jsonl(run_dir / result.samples_file, judged.rows)
    result.status = "done"
    atomic_write_json(variant_file(run_dir, name), to_jsonable(result))
    return result


def main(argv: list[str] | None = None) -> int:
    """Child entry point: run the job file; a user error ends in one sentence, like the CLI."""
    from harness.errors import UserError
    from harness.quiet import quiet_third_party

    quiet_third_party()
    p = argparse.ArgumentParser(prog="python -m harness.train.job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", type=Path, help="job file written by the runner (RUN_DIR/jobs/NAME.json)")
    args = p.parse_args(argv)
    try:
        result = run_job(Job.read(args.job))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if result.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
