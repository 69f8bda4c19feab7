"""End to end on the tiny model and real cats: fake generators judged by the code that judges real variants.

A "copy machine" that returns training pieces must be judged memorizing and a generator of
random characters noise, through harness.train.job.run_job (train, generate, score, verdict),
with only the sampling step swapped out.
"""
from __future__ import annotations

import json
import random

import pytest
from conftest import run_job_here

from harness.config import load_plan
from harness.data import build_dataset
from harness.results import GenerationStats
from harness.train.generate import Sample


@pytest.fixture(scope="module")
def tiny_cfg():
    plan = load_plan("tiny", ["train.max_steps=2", "train.eval_points=2"])
    return plan.variants["base"]


def _fake(texts: list[str]):
    def generate_samples(model, tokenizer, gcfg, progress=None):
        samples = [Sample(i, t, len(t), False) for i, t in enumerate(texts)]
        return samples, GenerationStats(n=len(samples))
    return generate_samples


def _judge(monkeypatch, tmp_path, cfg, texts):
    import harness.train.generate

    monkeypatch.setattr(harness.train.generate, "generate_samples", _fake(texts))
    return run_job_here("base", cfg, tmp_path)


def test_copy_machine_is_memorizing(monkeypatch, tmp_path, tiny_cfg):
    ds = build_dataset(tiny_cfg.data)
    result = _judge(monkeypatch, tmp_path, tiny_cfg, [p.text for p in ds.train[:6]])
    assert result.copy_analysis.verdict == "memorizing"
    assert result.verdict.verdict == "memorizing"
    assert result.scores.metrics["exact_copy_rate"].value == 1.0
    assert (tmp_path / result.samples_file).is_file()


def test_random_characters_are_noise(monkeypatch, tmp_path, tiny_cfg):
    rng = random.Random(0)
    noise = ["\n".join("".join(chr(rng.randint(33, 126)) for _ in range(30)) for _ in range(8)) for _ in range(6)]
    result = _judge(monkeypatch, tmp_path, tiny_cfg, noise)
    assert result.verdict.verdict == "noise"  # whatever the loss curves say: never "learning"
    assert result.scores.metrics["valid_rate"].value == 0.0
    assert result.scores.metrics["typical_rate"].value == 0.0 and result.scores.metrics["novelty"].n == 0
    typ = result.copy_analysis.evidence.typicality
    assert typ.set_noise and typ.noise_rate == 1.0
    rows = [json.loads(line) for line in (tmp_path / result.samples_file).read_text().splitlines()]
    assert all(r["atypical"] and r["noise"] and "cross_entropy_bits" in r for r in rows)


def test_art_random_characters_with_spaces_is_not_learning(monkeypatch, tmp_path, tiny_cfg):
    # the report: random art characters scored "novel" with valid_rate 1.0 before typicality
    rng = random.Random(1)
    art = ["\n".join("".join(rng.choice("/\\|_()-=o.    ") for _ in range(rng.randint(8, 20)))
                     for _ in range(rng.randint(4, 9))) for _ in range(8)]
    result = _judge(monkeypatch, tmp_path, tiny_cfg, art)
    assert result.copy_analysis.verdict == "noise" and result.verdict.verdict == "noise"
