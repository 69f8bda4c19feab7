"""The benchmark's machinery on CPU: arithmetic, parity, the OOM path and one real `asciitune bench` run.

Timings on CPU mean nothing; the structure of the results, the OOM recording, the parity
verdicts and the MFU arithmetic do, and they are what the GPU run relies on.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import asciitune

from harness.config import RunConfig, apply_overrides
from harness.errors import UserError
from harness.gpu.bench import PointSpec, flops_per_token, median_iqr, merge, mfu, parse_extra_point, plan_points
from harness.gpu.parity import bench_parity, run_parity
from harness.models import LLAMA_3_2_3B_CONFIG, TINY_CONFIG
from harness.results import BenchPoint, BenchResult, LossCurves, RunResult, TrainStats, VariantResult, build, load

SCHEMA_KEYS = {"backend", "batch_size", "seq_len", "status", "median_step_s", "step_s_iqr", "tokens_per_s",
               "peak_allocated_bytes", "peak_reserved_bytes", "mfu", "losses", "load_s", "warmup_s"}


def test_flops_per_token_equals_trl() -> None:
    # Golden values from trl.trainer.utils.compute_flops_per_token(LlamaConfig(**cfg), seq_len), trl 1.15.0.
    assert flops_per_token(LLAMA_3_2_3B_CONFIG, 512) == 19_803_930_624
    assert flops_per_token(LLAMA_3_2_3B_CONFIG, 1024) == 20_332_412_928
    assert flops_per_token(TINY_CONFIG, 512) == 20_103_168
    # About 6 x the matmul parameters (3.21e9 with the tied LM head counted once) plus attention.
    assert flops_per_token(LLAMA_3_2_3B_CONFIG, 0) == 6 * 3_212_574_720


def test_mfu_and_median_iqr_arithmetic() -> None:
    assert mfu(10_000, 2e10, 800.0) == pytest.approx(0.25)
    assert mfu(None, 2e10, 800.0) is None and mfu(1.0, 1.0, None) is None
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, 2.0)
    assert median_iqr([0.5]) == (0.5, 0.0) and median_iqr([]) == (None, None)


def test_plan_runs_fixed_shapes_small_to_large_then_cats() -> None:
    cfg = apply_overrides(RunConfig(), {"bench.batch_sizes": [8, 2], "bench.seq_lens": [1024, 512]})
    points = plan_points(cfg, cats=True, extra=[parse_extra_point("2x512:adamw_torch")])
    assert [p.label for p in points] == ["b2-s512-adamw_torch", "b2-s512", "b2-s1024", "b8-s512", "b8-s1024",
                                         "cats-b2x4"]
    assert plan_points(cfg, cats=False)[0] == PointSpec("synthetic", 2, 512)
    with pytest.raises(UserError, match="BATCHxSEQ"):
        parse_extra_point("2by512")


def _point(backend: str, label: str = "b2-s512", losses=(11.0, 10.9, 10.8), fp: str = "f0", status: str = "ok"):
    return {"backend": backend, "label": label, "status": status, "losses": list(losses), "batch_fingerprint": fp}


def test_parity_passes_within_tolerance_and_reports_a_disagreement() -> None:
    same = bench_parity([_point("peft"), _point("unsloth", losses=(11.01, 10.95, 10.7))], steps=3)
    assert same["ok"] and same["points_compared"] == 1
    assert same["max_first_step_rel_diff"] == pytest.approx(0.01 / 11.0)
    bad = bench_parity([_point("peft"), _point("unsloth", losses=(11.0, 10.9, 10.8 * 1.03))], steps=3)
    assert not bad["ok"] and bad["finding"].startswith("FINDING") and "step 3" in bad["finding"]
    other_data = bench_parity([_point("peft"), _point("unsloth", fp="f1")], steps=3)
    assert not other_data["ok"] and "identical batches" in other_data["finding"]
    # Only the first `steps` count; an OOM point is left out, and nothing compared is not a pass.
    late = bench_parity([_point("peft", losses=(1, 1, 1, 1)), _point("unsloth", losses=(1, 1, 1, 2))], steps=3)
    assert late["ok"]
    none = bench_parity([_point("peft"), _point("unsloth", status="oom")], steps=3)
    assert not none["ok"] and none["points_compared"] == 0


def _run(backend: str, losses: list[float], final: float) -> RunResult:
    v = VariantResult(name="base", status="done", backend=backend,
                      curves=LossCurves(steps=[0, 4], train_loss=[2.0, final], heldout_loss=[2.1, final + 0.1],
                                        running_train_loss=[[i + 1, x] for i, x in enumerate(losses)]),
                      train=TrainStats(seconds=10.0, steps=len(losses), tokens=1000, tokens_per_s=100.0,
                                       peak_memory_bytes=2 ** 30, peak_memory_kind="cuda_max_reserved"))
    return RunResult(run_id=f"run-{backend}", data={"hash": "d1"}, variants={"base": v})


def test_run_parity_of_two_training_runs() -> None:
    ok = run_parity(_run("unsloth", [2.0, 1.9, 1.8, 1.7], 1.5), _run("peft", [2.0, 1.91, 1.8, 1.69], 1.52))
    assert ok["ok"] and ok["same_data"] and ok["train"]["peft"]["peak_memory_bytes"] == 2 ** 30
    drift = run_parity(_run("unsloth", [2.0, 1.9, 1.8, 1.7], 1.2), _run("peft", [2.0, 1.9, 1.8, 1.7], 1.5))
    assert not drift["ok"] and "final probe losses" in drift["finding"]


def test_a_point_that_runs_out_of_memory_is_recorded_and_the_grid_goes_on(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    from harness.gpu import worker as bench_worker

    def fake_train(model, tok, spec, cfg, texts, out_dir):
        if spec.batch_size == 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        with torch.no_grad():
            model.weight.add_(1.0)  # training moves the adapter; the next point must start fresh
        return {"step_s_all": [0.2, 0.1, 0.1, 0.1], "inner_s_all": [0.1] * 4, "real_tokens_all": [1024] * 4,
                "padded_tokens_all": [1024] * 4, "losses": [11.0, 10.9], "batch_fingerprint": "x"}

    monkeypatch.setattr(bench_worker, "_train_point", fake_train)
    model = torch.nn.Linear(4, 4, bias=False)
    init = {"weight": model.weight.detach().clone()}
    cfg = apply_overrides(RunConfig(), {"bench.warmup_steps": 1})
    specs = [PointSpec("synthetic", 2, 512), PointSpec("synthetic", 8, 1024), PointSpec("synthetic", 2, 1024)]
    raws = [bench_worker.run_point(model, None, spec, cfg, [], init) for spec in specs]
    assert [r["status"] for r in raws] == ["ok", "oom", "ok"]
    assert "out of memory" in raws[1]["error"]
    assert torch.equal(model.weight, init["weight"] + 1.0)  # reset before the third point, then trained once
    worker = {"points": raws, "matmul_tflops": 1.0, "arch": TINY_CONFIG, "load_s": 1.5, "card": {"name": "cpu"}}
    bench = merge({"peft": worker}, cfg, specs, [])
    oom = bench["points"][1]
    assert oom["status"] == "oom" and oom["median_step_s"] is None and SCHEMA_KEYS <= set(oom)
    typed = build(BenchResult, bench)  # what run_bench stores: every merged key has a typed home
    assert isinstance(typed.points[1], BenchPoint) and typed.points[1].status == "oom"
    assert bench["settings"]["load_in_4bit"] is False and "NF4" not in bench["parity"]["why"]
    quant = merge({"peft": worker}, apply_overrides(cfg, {"model.load_in_4bit": True}), specs, [])
    assert quant["settings"]["load_in_4bit"] is True and "NF4" in quant["parity"]["why"]
    ok = bench["points"][0]
    assert ok["median_step_s"] == pytest.approx(0.1) and ok["warmup_s"] == pytest.approx(0.2)
    assert ok["tokens_per_s"] == pytest.approx(10240.0)
    assert ok["mfu"] == pytest.approx(10240.0 * flops_per_token(TINY_CONFIG, 512) / 1e12)


def test_a_backend_refused_at_load_marks_every_point_with_its_sentence(monkeypatch) -> None:
    """QLoRA on a machine without CUDA: both backends refuse alike, and the grid records the sentence per point."""
    from harness.backends import common
    from harness.errors import UserError

    cfg = apply_overrides(RunConfig(), {"model.load_in_4bit": True})
    monkeypatch.setattr(common, "has_cuda", lambda: False)
    with pytest.raises(UserError, match=r"^model.load_in_4bit needs an NVIDIA GPU .*=false on this machine\.$"):
        common.require_4bit_device(cfg)
    common.require_4bit_device(RunConfig())  # bf16 passes anywhere
    monkeypatch.setattr(common, "has_cuda", lambda: True)
    common.require_4bit_device(cfg)
    specs = [PointSpec("synthetic", 2, 512), PointSpec("cats", 2, 0, 4)]
    refused = {"points": [], "card": {"name": "cpu"}, "refused": "model.load_in_4bit needs an NVIDIA GPU."}
    bench = merge({"peft": refused, "unsloth": {"points": []}}, cfg, specs, [])
    by = {(p["backend"], p["label"]): p for p in bench["points"]}
    assert by["peft", "b2-s512"]["status"] == by["peft", "cats-b2x4"]["status"] == "refused"
    assert by["peft", "cats-b2x4"]["error"] == "model.load_in_4bit needs an NVIDIA GPU."
    assert by["unsloth", "b2-s512"]["status"] == "error"  # a worker that died is not a refusal
    assert "refused" in bench["parity"]["finding"]


def test_bench_cli_writes_a_complete_result_on_cpu(tmp_path: Path) -> None:
    proc = asciitune("--reports-dir", str(tmp_path), "bench", "--config", "tiny", "--model", "random:tiny",
                     "--backend", "peft", "bench.batch_sizes=[2]", "bench.seq_lens=[16]", "bench.steps=2",
                     "bench.warmup_steps=1", "bench.loss_steps=2", "data.max_train_pieces=4", "train.grad_accum=2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # one compact JSON document last
    assert summary["card"].startswith("CPU") and summary["settings"]["steps"] == 2
    run = load(next(tmp_path.glob("runs/*/results.json")))
    bench = run.bench
    assert isinstance(bench, BenchResult)
    assert [p.label for p in bench.points] == ["b2-s16", "cats-b2x2"]
    for p in bench.points:
        assert SCHEMA_KEYS <= set(vars(p)) and p.status == "ok" and len(p.losses) == 2
        assert p.median_step_s > 0 and p.tokens_per_s > 0 and p.mfu > 0
    assert bench.points[1].seq_len > 0 and 0 <= bench.points[1].padding_fraction < 1
    assert bench.points[0].real_tokens_per_step == 2 * 16
    assert bench.matmul_tflops > 0 and bench.workers["peft"]["exit_code"] == 0
    assert bench.parity["points_compared"] == 0 and not bench.parity["ok"]  # one backend: nothing to compare
    assert run.environment["versions"]["torch"] and run.data["name"] == "cats"


def test_environment_says_whether_a_package_has_cached_bytecode(tmp_path, monkeypatch) -> None:
    # A process's start time on the GPU image hangs on this, so bench documents record it: a package with
    # only sources reads False, the same package after compileall reads True.
    import compileall
    import importlib

    from harness import environment

    pkg = tmp_path / "asciitune_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("sys.pycache_prefix", None)
    importlib.invalidate_caches()
    assert environment.bytecode(("asciitune_probe_pkg",))["cached"] == {"asciitune_probe_pkg": False}
    assert compileall.compile_dir(str(pkg), quiet=1)
    got = environment.bytecode(("asciitune_probe_pkg", "no_such_package_here"))
    assert got["cached"] == {"asciitune_probe_pkg": True, "no_such_package_here": False}
    assert isinstance(got["dont_write_bytecode"], bool)
