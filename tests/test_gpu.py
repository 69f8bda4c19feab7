"""GPU tests: both backends train on the GPU, and the benchmark writes a complete result there.

    pytest -m gpu tests/test_gpu.py        # skipped where torch.cuda is unavailable (see conftest.py)

Each backend runs in its own process through the real CLI, on the tiny random Llama, so
the tests take about a minute per backend (mostly Unsloth's import and compilation).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import asciitune, variant_result

pytestmark = pytest.mark.gpu

SCHEMA_KEYS = {"backend", "batch_size", "seq_len", "status", "median_step_s", "step_s_iqr", "tokens_per_s",
               "peak_allocated_bytes", "peak_reserved_bytes", "mfu", "losses", "load_s", "warmup_s"}


@pytest.mark.parametrize("backend", ["unsloth", "peft"])
def test_backend_trains_a_few_steps_on_the_gpu(backend: str, tmp_path: Path) -> None:
    proc = asciitune("--reports-dir", str(tmp_path), "run", "--config", "tiny", "--model", "random:tiny",
                     "--backend", backend, "--no-report", "train.max_steps=4", "generate.n_samples=2",
                     "generate.max_new_tokens=16")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = next(tmp_path.glob("runs/*"))
    v = variant_result(run_dir, "base")
    assert v["status"] == "done" and v["backend"] == backend
    assert "cuda" in v["train"]["peak_memory_kind"] and v["train"]["peak_memory_bytes"] > 0
    assert v["train"]["steps"] == 4 and v["curves"]["train_loss"][-1] < v["curves"]["train_loss"][0]
    if backend == "unsloth":
        assert "GPU kernels" in v["backend_note"]


def test_bench_produces_a_complete_result_on_the_gpu(tmp_path: Path) -> None:
    proc = asciitune("--reports-dir", str(tmp_path), "bench", "--config", "tiny", "--model", "random:tiny",
                     "bench.batch_sizes=[2]", "bench.seq_lens=[64]", "bench.steps=3", "bench.warmup_steps=2",
                     "bench.loss_steps=4", "data.max_train_pieces=16")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bench = json.loads(next(tmp_path.glob("runs/*/results.json")).read_text())["bench"]
    assert "NVIDIA" in bench["card"] and bench["matmul_tflops"] > 10
    assert {p["backend"] for p in bench["points"]} == {"unsloth", "peft"}
    for p in bench["points"]:
        assert SCHEMA_KEYS <= set(p) and p["status"] == "ok", p
        assert p["peak_allocated_bytes"] > 0 and p["peak_reserved_bytes"] >= p["peak_allocated_bytes"]
        assert 0 < p["mfu"] < 1 and len(p["losses"]) == 4
    parity = bench["parity"]
    assert parity["points_compared"] == 2 and all(r["same_batches"] for r in parity["points"]), parity["finding"]
