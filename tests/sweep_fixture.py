"""A synthetic lr x r sweep run (results.json + samples), every number set here, for the sweep report's tests."""
from __future__ import annotations

import json
from pathlib import Path

from run_fixture import CAT, EVIL_ART, _samples, scores

from harness.judge import seeds as seed_model
from harness.results import (
    CopyAnalysis,
    CopyEvidence,
    LossAnalysis,
    LossCurves,
    RunResult,
    TrainStats,
    VariantResult,
    Verdict,
)

LRS = (1e-4, 1e-3, 1e-2)
RS = (4, 8)
STEPS = [0, 10, 20, 30, 40, 50]
# (lr, r) -> verdict, valid rate, width consistency, novelty, final held-out loss, onset step. The best by the
# ranking rule is lr 1e-3, r 4 (learning, quality 0.9 x 0.9 x 0.55); the runner-up lr 1e-3, r 8 draws with the
# novelty a test passes (`runner_up_novelty`), so a test sets how far behind it is.
OUTCOMES = {(1e-4, 4): ("undertrained", 0.6, 0.8, 0.6, 2.0, None),
            (1e-4, 8): ("undertrained", 0.6, 0.8, 0.62, 1.98, None),
            (1e-3, 4): ("learning", 0.9, 0.9, 0.55, 1.5, None),
            (1e-3, 8): ("learning", 0.9, 0.9, None, 1.48, None),
            (1e-2, 4): ("memorizing", 1.0, 0.97, 0.05, 2.4, 20),
            (1e-2, 8): ("memorizing", 1.0, 0.97, 0.04, 2.6, 10)}
JITTER = 0.01  # replicate s of a seeded run: novelty + JITTER x (-1)^s, held-out loss x (1 + JITTER x s)


def name(lr: float, r: int) -> str:
    """The variant name a [sweep] grid gives the configuration."""
    return f"lr{lr:g}-r{r}"


def _variant(lr: float, r: int, s: int, seeds: int, runner_up_novelty: float) -> VariantResult:
    verdict, valid, width, novelty, loss, onset = OUTCOMES[(lr, r)]
    novelty = runner_up_novelty if novelty is None else novelty
    if seeds > 1:
        novelty, loss = novelty + JITTER * (-1) ** s, loss * (1 + JITTER * s)
        onset = onset + 10 * s if onset is not None else None
    base = name(lr, r)
    heldout = [2.6, 2.2, 1.9, 1.7, 1.6, loss] if onset is None else [2.6, 2.0, 1.8, 2.0, 2.2, loss]
    exact = 0.6 if verdict == "memorizing" else 0.0
    la = LossAnalysis(verdict=verdict, rule="loss rule", heldout_min=min(heldout), heldout_min_step=STEPS[
        heldout.index(min(heldout))], final_train_loss=0.9, final_heldout_loss=loss, final_gap=loss - 0.9,
        final_ratio=loss / 0.9, initial_ratio=1.05, train_drop=0.6, onset_step=onset)
    copy = "memorizing" if verdict == "memorizing" else "novel"
    return VariantResult(
        name=base + (f"@s{s}" if s else ""), status="done", seed_group=base if seeds > 1 else "",
        config={"model": {"name": "tiny"}, "lora": {"r": r, "alpha": 8}, "train": {"lr": lr, "seed": 3407 + s},
                "generate": {"seed": 3407 + s}},
        config_hash=f"hash-{base}-{s}", backend="peft", device="cpu",
        curves=LossCurves(steps=STEPS, epochs=[x / 10 for x in STEPS], train_loss=[2.5, 2.0, 1.6, 1.3, 1.1, 0.9],
                          heldout_loss=heldout),
        loss_analysis=la, train=TrainStats(seconds=3.0, steps=50, tokens=4000, tokens_per_s=1300.0),
        scores=scores(novelty, width, valid, exact),
        copy_analysis=CopyAnalysis(verdict=copy, rule="copy rule", evidence=CopyEvidence(valid_rate=valid,
                                                                                         copy_rate=exact)),
        verdict=Verdict(verdict=verdict, rule="final rule", loss_verdict=verdict, copy_verdict=copy),
        samples_file=f"samples-{base}{f'@s{s}' if s else ''}.jsonl")


def make_sweep_run(run_dir: Path, seeds: int = 1, runner_up_novelty: float = 0.5,
                   run_id: str = "sweep-a") -> RunResult:
    """Write the 3 x 2 sweep (each configuration over `seeds` seeds) with samples, and return its results."""
    variants = {}
    for lr in LRS:
        for r in RS:
            for s in range(seeds):
                v = _variant(lr, r, s, seeds, runner_up_novelty)
                variants[v.name] = v
    run = RunResult(
        run_id=run_id, created="2024-11-28T03:00:00Z", command="asciitune run --config grid.toml",
        config_source="grid.toml", base_config={"model": {"name": "tiny"}, "lora": {"r": 8, "alpha": 8},
                                                "train": {"lr": 1e-3}},
        config_hash="cfg-sweep", data={"name": "cats", "hash": "d" * 64, "n_train": 8, "n_heldout": 8},
        environment={"versions": {"python": "3.11.7"}, "device": {"name": "cpu", "count": 1}},
        human_reference=scores(0.6, 0.95, 1.0, 0.0), variants=variants, seeds=seed_model.summarize(variants))
    run_dir.mkdir(parents=True, exist_ok=True)
    for v in variants.values():
        texts = [EVIL_ART, CAT] if v.name.startswith("lr0.001-r4") else [CAT, CAT + "\n~"]
        rows = [json.dumps(x) for x in _samples(texts, v.scores.metrics["novelty"].value)]
        (run_dir / v.samples_file).write_text("\n".join(rows) + "\n", encoding="utf-8")
    run.save(run_dir)
    return run
