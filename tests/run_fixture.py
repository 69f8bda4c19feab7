"""A synthetic but complete run folder (results.json + samples) for report and compare tests."""
from __future__ import annotations

import json
from pathlib import Path

from harness.results import (
    SCHEMA_VERSION,
    BenchResult,
    CopyAnalysis,
    Diversity,
    ExportRecord,
    GenerationStats,
    LossAnalysis,
    LossCurves,
    Metric,
    RunResult,
    Scores,
    TrainStats,
    VariantResult,
    Verdict,
    build,
)

# Art that breaks naive HTML/Markdown: a tag, an ampersand, a leading newline, leading spaces, backticks.
EVIL_ART = "\n   <script>alert(1)</script>\n  /\\_/\\  & co\n ( o.o )  &amp; <b>x</b>\n  > ^ <\n"
FENCE_ART = "```\n ``` `` ````\n  cat\n"
CAT = "  /\\_/\\\n ( o.o )\n  > ^ <"


def metric(value: float, n: int = 8, higher: bool = True, stderr: float | None = 0.02, ci: bool = True) -> Metric:
    """One metric as harness.judge.score makes it."""
    lo, hi = (value - 2 * stderr, value + 2 * stderr) if ci and stderr is not None else (None, None)
    return Metric(value=value, stderr=stderr, ci_low=lo, ci_high=hi, n=n, higher_is_better=higher)


def scores(novelty: float, width: float, valid: float, exact: float, stderr: float | None = 0.02) -> Scores:
    """A scores block with every metric."""
    m = {"width_consistency": metric(width, stderr=stderr), "novelty": metric(novelty, stderr=stderr),
         "exact_copy_rate": metric(exact, higher=False, stderr=stderr),
         "near_copy_rate": metric(min(1.0, exact + 0.1), higher=False, stderr=stderr),
         "copied_line_share": metric(exact / 2, higher=False, stderr=stderr),
         "valid_rate": metric(valid, stderr=stderr), "cut_off_rate": metric(0.125, higher=False, stderr=stderr),
         "duplicate_rate": metric(0.0, higher=False, stderr=stderr),
         "mean_pairwise_distance": metric(0.6, stderr=None, ci=False), "distinct_ngrams": metric(0.7, stderr=None)}
    return Scores(metrics=m, diversity=Diversity(n=8))


def _samples(texts: list[str], novelty: float) -> list[dict]:
    return [{"index": i, "text": t, "cut_off": i == 2, "nearest_train_index": 10 + i,
             "nearest_train_text": CAT + "\n& <i>",
             "similarity": 1 - novelty, "novelty": novelty + 0.03 * (i % 3), "exact_copy": novelty < 0.05,
             "near_copy": novelty < 0.2, "width_consistency": 0.9, "valid": i != 3} for i, t in enumerate(texts)]


def _variant(name: str, r: int, curves: tuple[list, list], analysis: dict, sc: Scores, verdict: str) -> VariantResult:
    steps = [0, 10, 20, 30, 40, 50]
    return VariantResult(
        name=name, status="done", config={"model": {"name": "smollm2-135m"}, "lora": {"r": r, "alpha": 16}},
        config_hash=f"hash-{name}", backend="peft", device="cuda:0",
        curves=LossCurves(steps=steps, epochs=[s / 10 for s in steps], train_loss=curves[0], heldout_loss=curves[1]),
        loss_analysis=LossAnalysis(**analysis),
        train=TrainStats(seconds=12.5, steps=50, epochs=5.0, tokens=40000, tokens_per_s=3200.0,
                         peak_memory_bytes=3 * 1024 ** 3, peak_memory_kind="cuda_max_reserved",
                         trainable_parameters=4_800_000),
        generation=GenerationStats(n=5, tokens_per_s=900.0), scores=sc,
        copy_analysis=CopyAnalysis(verdict="original", rule="copy rule"),
        verdict=Verdict(verdict=verdict, rule="final rule <combined>"), samples_file=f"samples-{name}.jsonl")


def _point(backend: str, bs: int, sl: int, label: str | None = None, workload: str = "synthetic",
           optim: str = "adamw_8bit", grad_accum: int = 1) -> dict:
    fast = backend == "unsloth"
    return {"backend": backend, "workload": workload, "batch_size": bs, "seq_len": sl, "grad_accum": grad_accum,
            "optim": optim, "label": label or f"b{bs}-s{sl}",
            "status": "oom" if (backend, bs, sl) == ("peft", 8, 1024) else "ok",
            "error": "CUDA OOM <peft> & co" if (backend, bs, sl) == ("peft", 8, 1024) else "",
            "median_step_s": (0.1 if fast else 0.2) * bs * sl / 1024, "step_s_iqr": 0.01,
            "tokens_per_s": 1e4 * (2 if fast else 1) * (1 + sl / 1024), "peak_allocated_bytes": bs * sl * 2e6,
            "peak_reserved_bytes": bs * sl * 2.5e6, "mfu": 0.3, "losses": [2.0, 1.9]}


def make_bench() -> BenchResult:
    """A bench block shaped like harness.gpu.bench's: grid, cats workload, extra points, bare loop, parity."""
    backends = ("peft", "unsloth")
    points = [_point(be, bs, sl) for be in backends for bs in (2, 8) for sl in (512, 1024)]
    points += [_point(be, 2, 127, "cats-b2x4", "cats", grad_accum=4) for be in backends]
    points[-2]["tokens_per_s"], points[-1]["tokens_per_s"] = 450.0, 600.0  # the real workload: far below the grid
    extra = [_point(be, 2, 512, "b2-s512-adamw_torch", optim="adamw_torch") for be in backends]
    comparison = [{"backend": be, "harness_point": "b2-s512", "optim": "adamw_8bit", "harness_step_s": step,
                   "harness_compute_s": step - 0.003, "bare_step_s": bare, "ratio": step / bare,
                   "within_3pct": step / bare <= 1.03} for be, step, bare in (("unsloth", 0.1, 0.0992),
                                                                                ("peft", 0.2, 0.16))]
    return build(BenchResult, {"card": "NVIDIA H100 80GB", "matmul_tflops": 610.0, "note": "merged <by hand> & checked",
            "points": points, "extra_points": extra,
            "bare_loop": {"script": "bare_loop.py", "sha256": "fa6071e9", "batch_size": 2, "seq_len": 512,
                          "comparison": comparison},
            "parity": {"ok": True, "tolerance_rel": 0.02, "steps": 10, "reference": "peft",
                       "why": "bf16 <rounding>", "max_rel_diff": 0.0002,
                       "finding": "Losses agree within 2% per step at every compared point (largest <0.02%>).",
                       "points": [{"label": "b2-s512", "max_rel_diff": 0.0002}]}})


def make_exports() -> dict[str, ExportRecord]:
    """A variant's exports as harness.export records and scores them: the unexported row listed last."""
    def entry(fmt: str, size: int, load_s: float | None, sc: Scores | None) -> ExportRecord:
        e = ExportRecord(format=fmt, path=f"exports/r8/{fmt.replace(':', '-')}", bytes=size, export_s=3.0)
        if sc is not None:
            e.load_s, e.generation, e.scores = load_s, GenerationStats(tokens_per_s=850.0), sc
        return e
    return {"gguf:q8_0": entry("gguf:q8_0", 145 * 1024 ** 2, 0.41, scores(0.52, 0.88, 0.8, 0.0)),
            "merged": entry("merged", 270 * 1024 ** 2, None, None),  # exported, not scored yet
            "unexported": _judged(entry("unexported", 290 * 1024 ** 2, 2.5, scores(0.55, 0.9, 0.875, 0.0)))}


def _judged(e: ExportRecord) -> ExportRecord:
    e.copy_analysis = CopyAnalysis(verdict="novel", rule="copy rule")
    return e


def _with_rows(sc: Scores, rows: list[dict]) -> Scores:
    sc.per_sample = rows
    return sc


def make_run(run_dir: Path, run_id: str = "run-a", data_hash: str = "d" * 64, device: str = "NVIDIA H100",
             novelty_shift: float = 0.0, schema_version: int = SCHEMA_VERSION, bench: bool = True) -> RunResult:
    """Write a two-variant run (one learning, one memorizing) with samples, and return its results."""
    good = _variant("r8", 8, ([2.0, 1.6, 1.3, 1.1, 1.0, 0.95], [2.1, 1.8, 1.6, 1.55, 1.5, 1.5]),
                    {"verdict": "learning", "rule": "loss rule", "heldout_min": 1.5, "heldout_min_step": 40,
                     "final_train_loss": 0.95, "final_heldout_loss": 1.5, "final_gap": 0.55, "final_ratio": 1.58,
                     "initial_ratio": 1.05, "train_drop": 0.525, "onset_step": None},
                    scores(0.55 + novelty_shift, 0.9, 0.875, 0.0), "learning")
    mem = _variant("r32", 32, ([2.0, 1.2, 0.7, 0.4, 0.2, 0.1], [2.1, 1.7, 1.75, 1.9, 2.2, 2.5]),
                   {"verdict": "memorizing", "rule": "loss rule", "heldout_min": 1.7, "heldout_min_step": 10,
                    "final_train_loss": 0.1, "final_heldout_loss": 2.5, "final_gap": 2.4, "final_ratio": 25.0,
                    "initial_ratio": 1.05, "train_drop": 0.95, "onset_step": 10},
                   scores(0.05, 0.97, 1.0, 0.6), "memorizing")
    failed = VariantResult(name="r64", status="failed", error="CUDA out of memory <at> step 3 & more")
    run = RunResult(
        run_id=run_id, schema_version=schema_version, created="2024-11-28T03:00:00Z", command="asciitune run",
        config_source="harness/configs/default.toml", base_config={"model": {"name": "smollm2-135m"},
                                                                   "lora": {"r": 16, "alpha": 16}},
        config_hash="cfg0123456789abc", data={"name": "cats", "hash": data_hash, "n_train": 40, "n_heldout": 8},
        environment={"versions": {"python": "3.11.7", "torch": "2.5.1"}, "device": {"name": device, "count": 1},
                     "git_commit": "abc1234", "machine": {"host": "box", "cpu": "x86_64"}},
        human_reference=_with_rows(scores(0.6, 0.95, 1.0, 0.0), [{"novelty": 0.5 + i / 20} for i in range(8)]),
        variants={"r8": good, "r32": mem, "r64": failed})
    if bench:
        run.bench = make_bench()
    good.exports = make_exports()
    run_dir.mkdir(parents=True, exist_ok=True)
    good_texts = [EVIL_ART, FENCE_ART, CAT, " \t tab\n", CAT + "\n~"]
    for v, texts, nov in ((good, good_texts, 0.55), (mem, [CAT] * 3, 0.0)):
        lines = [json.dumps(s) for s in _samples(texts, nov)]
        (run_dir / v.samples_file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    run.save(run_dir)
    return run
