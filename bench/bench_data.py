"""Benchmark: CPU data preparation, the part of a run that happens before any model is loaded.

    pytest bench/bench_data.py --benchmark-only

Two measurements on the built-in cats: `harness.data.build_dataset(DataConfig())` (read
catsart's JSON, normalize, drop exact and near duplicates, group close variants, split;
the near-duplicate and grouping passes are all-pairs rapidfuzz comparisons) and tokenizing
every training text as the trainer would (`format_example` + the SmolLM2 tokenizer, or the
one in $ASCIITUNE_TOKENIZER). Wall times are recorded with CPU time and the load average,
since a concurrent job on a 2-core machine moves wall time much more than CPU time.
"""
from __future__ import annotations

import json
import os
import platform
import time

import pytest

from harness.config import DataConfig
from harness.data import build_dataset, format_example


def _cpu_min(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _report(benchmark, name: str, cpu_min_s: float, **extra) -> None:
    print("\n" + json.dumps({
        "bench": name, "wall_mean_s": round(benchmark.stats["mean"], 4), "wall_min_s": round(benchmark.stats["min"], 4),
        "cpu_min_s": round(cpu_min_s, 4), "load_avg_1m": os.getloadavg()[0], **extra,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count()}}))


def test_build_cats_dataset(benchmark) -> None:
    cfg = DataConfig()
    ds = benchmark.pedantic(build_dataset, args=(cfg,), rounds=5, iterations=1, warmup_rounds=1)
    _report(benchmark, "build_dataset_cats", _cpu_min(lambda: build_dataset(cfg)), n_raw=ds.n_raw,
            n_train=len(ds.train), n_heldout=len(ds.heldout))
    assert ds.train and ds.heldout


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from harness.models import ensure_smollm2

    return AutoTokenizer.from_pretrained(os.environ.get("ASCIITUNE_TOKENIZER") or ensure_smollm2())


def test_tokenize_cats_training_texts(benchmark, tokenizer) -> None:
    ds = build_dataset(DataConfig())
    texts = [format_example(p.text, tokenizer.eos_token) for p in ds.train]
    tokenize = lambda: tokenizer(texts, add_special_tokens=False)["input_ids"]
    ids = benchmark.pedantic(tokenize, rounds=10, iterations=1, warmup_rounds=1)
    n_tokens = sum(len(x) for x in ids)
    _report(benchmark, "tokenize_cats_train", _cpu_min(tokenize), n_texts=len(texts), n_tokens=n_tokens,
            tokens_per_s=round(n_tokens / benchmark.stats["min"]))
    assert n_tokens > len(texts)
