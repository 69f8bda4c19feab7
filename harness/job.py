"""One variant, end to end, in the current process: load, train, save adapter, sample, score.

`asciitune run` starts one process per variant running this (`asciitune train --run-dir`),
because a process can hold only one backend (Unsloth patches transformers globally) and a
crash then costs one variant, not the run. The variant's result lands in
`<run-dir>/variants/<name>.json`; the parent merges it into results.json.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from harness.config import RunConfig
from harness.fsutil import atomic_write_json, atomic_write_text
from harness.results import VariantResult

VARIANTS_DIR = "variants"
PROGRESS_MARK = "@@progress"


def variant_file(run_dir: Path, name: str) -> Path:
    """Where a finished variant's result is written."""
    return Path(run_dir) / VARIANTS_DIR / f"{name}.json"


def write_samples(path: Path, rows: list[dict]) -> None:
    """Samples as JSONL, atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def run_variant(name: str, cfg: RunConfig, run_dir: Path, resume_from: str | None = None) -> VariantResult:
    """Train and judge one variant; the backend is imported first, as Unsloth requires."""
    from harness import backends

    backend = backends.get(cfg.model.backend)
    from harness import judge
    from harness.data import build_dataset
    from harness.generate import generate_samples
    from harness.memorization import analyse
    from harness.models import resolve
    from harness.train import train_variant

    run_dir = Path(run_dir)
    result = VariantResult(name=name, config=cfg.to_dict(), config_hash=cfg.hash(), backend=cfg.model.backend)
    ds = build_dataset(cfg.data)
    resolved = resolve(cfg.model.name)
    if resume_from:
        model, tok, info = backend.load_adapter(resume_from, resolved, cfg, is_trainable=True)
        result.backend_note = f"continued from {resume_from}"
    else:
        model, tok, info = backend.load(resolved, cfg)
    result.backend_note = "; ".join(x for x in (info["backend_note"], result.backend_note) if x)
    result.device = info["device"]
    print(f"[{name}] {info['backend_note']} on {info['device']} ({info['dtype']}); "
          f"{len(ds.train)} train / {len(ds.heldout)} held-out pieces", file=sys.stderr, flush=True)

    def report(step: int, tr: float, ho: float) -> None:
        print(f"[{name}] step {step}: train loss {tr:.4f}, held-out loss {ho:.4f}", file=sys.stderr, flush=True)

    def progress(kind: str, done: int, total: int) -> None:
        # Machine-readable lines the parent turns into a progress bar (harness.runner).
        print(f"{PROGRESS_MARK} {kind} {done} {total}", file=sys.stderr, flush=True)

    backend.for_training(model)
    result.curves, result.train = train_variant(model, tok, ds, cfg, run_dir / "checkpoints" / name, on_eval=report,
                                                on_step=lambda d, t: progress("train", d, t))
    adapter_dir = run_dir / "adapters" / name
    model.save_pretrained(str(adapter_dir))
    tok.save_pretrained(str(adapter_dir))
    atomic_write_json(adapter_dir / "asciitune-config.json", {"variant": name, "config": cfg.to_dict()})
    result.adapter_dir = str(adapter_dir.relative_to(run_dir))
    result.loss_analysis = analyse(result.curves.steps, result.curves.train_loss,
                                   result.curves.heldout_loss).to_dict()

    backend.for_inference(model)
    progress("generate", 0, cfg.generate.n_samples)
    samples, result.generation = generate_samples(model, tok, cfg.generate,
                                                  progress=lambda d: progress("generate", d, cfg.generate.n_samples))
    judged = judge.judge_samples([asdict(s) for s in samples], ds, result.loss_analysis["verdict"])
    result.scores, result.copy_analysis, result.verdict = judged.scores, judged.copy, judged.verdict
    result.samples_file = f"samples-{name}.jsonl"
    write_samples(run_dir / result.samples_file, judged.rows)
    result.status = "done"
    atomic_write_json(variant_file(run_dir, name), asdict(result))
    return result
