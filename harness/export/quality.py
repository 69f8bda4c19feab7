"""Quality per export format: load each, sample with the same settings, score like training's samples.

    asciitune export RUN --variant learn --format merged gguf:q8_0 --score

The unexported model (base + adapter as trained, unmerged, via the training backend) is
scored the same way under `exports["unexported"]`, so every format sits next to its source.
Each entry gains `load_s` (a second, warm load: imports done and the file in the page
cache), `generation` (timing and settings) and `scores` (harness.judge.score metrics, no per-sample
rows; those go to `samples-<format>.jsonl` beside the export). PyTorch formats draw with one
torch seed like `asciitune run`; llama.cpp draws sample i with seed + i, so sampled texts
differ between the two runtimes even when the weights agree: compare metrics, not texts.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

from harness.config import GenerateConfig
from harness.export import llama as llama_tools
from harness.export.formats import Source
from harness.judge.judge import judge
from harness.judge.reference import Reference
from harness.report.doc import fmt as fmt_num
from harness.results import CopyAnalysis, ExportRecord, Scores, write_jsonl

UNEXPORTED = "unexported"


def load_format(fmt: str, path: Path, src: Source, backend_name: str):
    """Load one format for sampling; returns (kind, model, tokenizer or None)."""
    if fmt.startswith("gguf:"):
        return "gguf", llama_tools.load_gguf(path, n_ctx=max(2048, src.cfg.model.max_seq_length)), None
    from harness import backends

    backend = backends.get(backend_name)
    from harness.models import resolve

    if fmt == "merged":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from harness.backends.common import has_cuda

        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        if has_cuda():
            model = model.cuda()
        tok = AutoTokenizer.from_pretrained(path)
        model.eval()
        return "torch", model, tok
    # unexported (the run's adapter) and adapter (its exported copy) load the same way
    model, tok, _ = backend.load_adapter(path, resolve(src.cfg.model.name), src.cfg, is_trainable=False)
    backend.for_inference(model)
    return "torch", model, tok


def sample_format(fmt: str, path: Path, src: Source, gcfg: GenerateConfig,
                  backend_name: str) -> tuple[list, dict, float]:
    """Load a format, time the load, and draw gcfg.n_samples pieces; returns (samples, stats, load_s)."""
    # Load once untimed so lazy imports (transformers builds model classes on first use) and a cold
    # page cache do not land on whichever format happens to go first; load_s is the warm second load.
    _close(load_format(fmt, path, src, backend_name))
    t0 = time.perf_counter()
    kind, model, tok = load_format(fmt, path, src, backend_name)
    load_s = time.perf_counter() - t0
    if kind == "gguf":
        samples, stats = llama_tools.generate_samples(model, gcfg)
        model.close()
    else:
        from harness.train.generate import generate_samples

        samples, stats = generate_samples(model, tok, gcfg)
        stats.dtype = str(next(model.parameters()).dtype)
    del model
    return samples, stats, round(load_s, 3)


def _close(loaded) -> None:
    kind, model, _ = loaded
    if kind == "gguf":
        model.close()


def score_samples(samples: list, ref: Reference) -> tuple[Scores, list[dict], CopyAnalysis | None]:
    """Scores against the run's reference (typicality included) without per-sample rows, the rows for the JSONL,
    and the copy verdict."""
    judged = judge(ref, [s.text for s in samples], [s.cut_off for s in samples], meta=[asdict(s) for s in samples])
    return judged.scores, [r.to_dict() for r in judged.rows], judged.copy


def score_formats(src: Source, entries: dict[str, ExportRecord], backend_name: str | None = None,
                  gcfg: GenerateConfig | None = None, say=print) -> dict[str, ExportRecord]:
    """For each format's record (plus the unexported model), sample and score; returns updated records."""
    from harness.data import build_dataset
    from harness.judge import reference

    backend_name = backend_name or src.cfg.model.backend
    from harness import backends

    backends.get(backend_name)  # the unexported model needs it, and Unsloth must precede transformers
    gcfg = gcfg or src.cfg.generate
    ref = reference.in_run(build_dataset(src.cfg.data))  # judged as the run judged its samples
    todo = {UNEXPORTED: ExportRecord(format=UNEXPORTED, path=str(src.adapter_dir),
                                     bytes=_base_bytes(src) + _folder_bytes(src.adapter_dir), backend=backend_name),
            **entries}
    out: dict[str, ExportRecord] = {}
    for fmt, entry in todo.items():
        path = Path(entry.path)
        say(f"scoring {fmt}: {gcfg.n_samples} samples from {path}")
        samples, stats, load_s = sample_format("unexported" if fmt == UNEXPORTED else fmt, path, src, gcfg,
                                               backend_name)
        metrics, rows, copy = score_samples(samples, ref)
        if fmt == UNEXPORTED:
            samples_file = (src.run_dir or Path(".")) / "exports" / src.variant / f"samples-{UNEXPORTED}.jsonl"
        else:
            samples_file = (path.parent if path.is_file() else path) / f"samples-{fmt.replace(':', '-')}.jsonl"
        write_jsonl(samples_file, rows)
        out[fmt] = replace(entry, format=fmt, load_s=load_s, generation=stats, scores=metrics, copy_analysis=copy,
                           samples_file=str(samples_file))
        say(f"  {fmt}: load {load_s:.2f}s, {stats.tokens_per_s:.0f} tok/s, "
            f"width {fmt_num(metrics.value('width_consistency'))}, novelty {fmt_num(metrics.value('novelty'))} "
            f"(valid samples), valid {fmt_num(metrics.value('valid_rate'))}, verdict {copy.verdict if copy else '-'}")
    return out


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _base_bytes(src: Source) -> int:
    """Weight files of the base model the adapter needs (what a user ships besides the adapter)."""
    from harness.models import resolve

    resolved = resolve(src.cfg.model.name)
    if resolved.random_init:
        return 0
    return sum(p.stat().st_size for p in Path(resolved.path).glob("*.safetensors"))


def with_samples(gcfg: GenerateConfig, n_samples: int | None) -> GenerateConfig:
    """gcfg with another sample count, if given."""
    return replace(gcfg, n_samples=n_samples, batch_size=min(gcfg.batch_size, n_samples)) if n_samples else gcfg
