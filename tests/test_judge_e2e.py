"""End to end on the tiny model and real cats: fake generators judged by the code that judges real variants.

A "copy machine" that returns training pieces must be judged memorizing and a generator of
random characters invalid, through harness.train.job.run_job (train, generate, score, verdict),
with only the sampling step swapped out.
"""
from __future__ import annotations

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


def test_random_characters_are_invalid(monkeypatch, tmp_path, tiny_cfg):
    rng = random.Random(0)
    noise = ["\n".join("".join(chr(rng.randint(33, 126)) for _ in range(30)) for _ in range(8)) for _ in range(6)]
    result = _judge(monkeypatch, tmp_path, tiny_cfg, noise)
    assert result.verdict.verdict == "invalid"
    assert result.scores.metrics["valid_rate"].value == 0.0
