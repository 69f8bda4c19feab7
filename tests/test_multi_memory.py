"""The multi-adapter engine's memory plan (harness.train.multi.memory) and what the local executor does with it
(harness.train.executors): engine processes and adapters per process from a card's free memory, a variant that
runs out of memory trained again in a smaller group in a fresh child, a stopped run's variants all counted.

    pytest tests/test_multi_memory.py
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from harness.config import load_plan
from harness.models import LLAMA_3_2_3B_CONFIG
from harness.train.multi import memory

GIB = 2 ** 30


def _seed():
    return load_plan("seed", ["model.backend=unsloth", "train.plan=fast"]).base


def test_lora_and_model_parameters_of_llama_3_2_3b():
    # reports/gpu-bench/README.md: 3,237,063,680 parameters with LoRA r=16 on all seven projections, 24,313,856 of
    # them trainable
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert memory.lora_parameters(LLAMA_3_2_3B_CONFIG, 16, targets) == 24_313_856
    assert memory.model_parameters(LLAMA_3_2_3B_CONFIG) == 3_237_063_680 - 24_313_856


def test_an_engine_grows_with_its_adapters_and_its_kv_cache_stops_at_one_generate_call():
    cost = memory.engine_cost(LLAMA_3_2_3B_CONFIG, _seed())
    sizes = [cost.bytes(k) for k in range(1, 17)]
    assert all(b > a for a, b in zip(sizes, sizes[1:]))  # every adapter adds its LoRA state at least
    assert cost.lora_state == 16 * 24_313_856
    # 32 samples x (512 new tokens + a prompt, in 256-position buckets) per adapter: 8 adapters fill a 256-row call,
    # so from the 9th on an adapter adds its LoRA state only (its rows are sampled in a later call; its training rows
    # share the micro-batch's 8 x 768 tokens, up to rounding)
    assert sizes[9] - sizes[8] == pytest.approx(cost.lora_state, rel=0.05)
    assert cost.kv_per_sample == 768 * 28 * 2 * 8 * 128 * 2


def test_the_plan_fits_one_engine_of_eight_on_an_80_gb_card_and_more_on_a_141_gb_one():
    cost = memory.engine_cost(LLAMA_3_2_3B_CONFIG, _seed())
    assert cost.bytes(8) < 0.9 * 79 * GIB < 2 * cost.bytes(8)  # the premise: one engine of 8 fits, two do not
    h100 = memory.plan_engines(32, [79 * GIB], jobs=3, cost=cost, max_group=8)
    assert (h100.processes, h100.group) == (1, 8), h100.why  # three processes at once ran out of memory there
    h200 = memory.plan_engines(32, [139 * GIB], jobs=3, cost=cost, max_group=8)
    assert h200.group == 8 and h200.processes == int(0.9 * 139 * GIB // cost.bytes(8)) >= 2, h200.why
    assert memory.plan_engines(8, [139 * GIB], jobs=3, cost=cost, max_group=8).processes == 1  # one group, one process
    # a card with little free: smaller groups, never none
    small = memory.plan_engines(8, [int(cost.bytes(3) / 0.9) + GIB], jobs=3, cost=cost, max_group=8)
    assert small.group == 3 and small.processes == 1
    tiny = memory.plan_engines(8, [GIB], jobs=3, cost=cost, max_group=8)
    assert tiny.group == 1 and "trying anyway" in tiny.why
    # two cards: an engine on each
    assert memory.plan_engines(32, [79 * GIB, 79 * GIB], jobs=3, cost=cost, max_group=8).processes == 2
    assert memory.plan_engines(32, [], jobs=3, cost=cost, max_group=8).processes == 3  # no card: --jobs stands


def test_free_memory_is_read_through_nvidia_smi_by_index_or_uuid(monkeypatch):
    import subprocess

    out = "0, GPU-aaa, 81000\n1, GPU-bbb, 1024\n"
    monkeypatch.setattr(memory.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(memory.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, out, ""))
    assert memory.free_bytes_per_gpu(["1", "GPU-aaa"]) == [1024 * 2 ** 20, 81000 * 2 ** 20]
    assert memory.free_bytes_per_gpu([]) == []


# ---- the executor: retry in a smaller group, stopped variants counted ---------------------------------------------

def _jobs(tmp_path, n: int):
    from harness.data import Dataset
    from harness.results import Scores
    from harness.train.job import Job

    base = _seed()
    ds = Dataset("none", [], [], 0, 0, 0, 0)
    return [Job(f"v{i}", replace(base, train=replace(base.train, lr=1e-4 * (i + 1))), tmp_path, ds, Scores(),
                multi_adapter=True) for i in range(n)]


class _FakeChildren:
    """Children that 'run' harness.train.job: each fake child writes a result per variant, out of memory while its
    engine group (GROUP_ENV) is larger than `fits`."""

    def __init__(self, fits: int) -> None:
        self.fits, self.groups, self.stopping = fits, [], False

    def start(self, cmd, env):
        from harness.train.multi.plan import GROUP_ENV

        self.groups.append(int(env[GROUP_ENV]))
        return {"jobs": cmd[3:], "group": int(env[GROUP_ENV])}

    def done(self, proc):
        pass


def _pump(proc, log_path, on_line):
    from harness.fsutil import atomic_write_json
    from harness.results import to_jsonable
    from harness.train.job import DONE_MARK, VARIANT_MARK, Job, failed_result, variant_file

    for path in proc["jobs"]:
        job = Job.read(path)
        on_line(f"{VARIANT_MARK} {job.name}")
        if proc["group"] > proc["fits"]:
            result = failed_result(job, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
        else:
            result = replace(failed_result(job, ""), status="done", error="")
        atomic_write_json(variant_file(job.run_dir, job.name), to_jsonable(result))
        on_line(f"{DONE_MARK} {job.name}")
    return 0


def test_variants_out_of_memory_in_a_group_train_again_in_half_groups_until_they_fit(tmp_path, monkeypatch):
    from rich.progress import Progress

    from harness.train import executors

    jobs = _jobs(tmp_path, 4)
    children = _FakeChildren(fits=1)
    monkeypatch.setattr(executors.procs, "pump", lambda proc, log, on_line: _pump({**proc, "fits": 1}, log, on_line))
    got = []
    with Progress(transient=True) as bar:
        executors.run_unit(jobs, children, bar, {"ASCIITUNE_MULTI_GROUP": "4"}, lambda *x: got.append(x),
                           lambda job: None, group=4)
    assert children.groups == [4, 2, 1]  # out of memory at 4 and 2: a fresh child each time, alone at last
    assert sorted(j.name for j, _, _ in got) == ["v0", "v1", "v2", "v3"]  # each variant emitted once
    assert all(r.status == "done" for _, r, _ in got)


def test_a_variant_out_of_memory_alone_is_recorded_failed_not_retried_forever(tmp_path, monkeypatch):
    from rich.progress import Progress

    from harness.train import executors

    jobs = _jobs(tmp_path, 2)
    children = _FakeChildren(fits=0)
    monkeypatch.setattr(executors.procs, "pump", lambda proc, log, on_line: _pump({**proc, "fits": 0}, log, on_line))
    got = []
    with Progress(transient=True) as bar:
        executors.run_unit(jobs, children, bar, {"ASCIITUNE_MULTI_GROUP": "2"}, lambda *x: got.append(x),
                           lambda job: None, group=2)
    assert children.groups == [2, 1]
    assert [r.status for _, r, _ in got] == ["failed", "failed"] and executors.out_of_memory(got[0][1])


def test_a_stopped_unit_yields_every_variant_as_stopped(tmp_path):
    from rich.progress import Progress

    from harness.train import executors

    jobs = _jobs(tmp_path, 3)
    children = _FakeChildren(fits=8)
    children.stopping = True
    got = []
    with Progress(transient=True) as bar:
        executors.run_unit(jobs, children, bar, {"ASCIITUNE_MULTI_GROUP": "8"}, lambda *x: got.append(x),
                           lambda job: None, group=8)
    assert children.groups == [] and [r.error for _, r, _ in got] == [executors.STOPPED] * 3


@pytest.mark.parametrize("status, error, capped, want", [
    ("done", "", True, "finished"),
    ("failed", "Out of memory (lower --jobs or train.batch_size): CUDA out of memory", True, "failed"),
    ("failed", "KeyboardInterrupt", True, "capped"),
    ("failed", "stopped before it finished (interrupted, or at a time cap)", False, "interrupted"),
    ("failed", "stopped before it started (interrupted, or at a time cap)", True, "capped"),  # the earlier wording
    (None, None, True, "capped"),  # never in the results at all
])
def test_each_sweep_variant_has_one_outcome(status, error, capped, want):
    from harness.gpu.seed_sweep import outcome

    assert outcome(status, error, capped) == want


def test_the_sweep_counts_every_variant_from_the_run_it_left(tmp_path):
    # The case: 8 finished, 16 failed for memory, 8 never started, and the runner stopped with an error:
    # the counts come from the results.json the run wrote as variants ended, not from the runner's return value.
    from types import SimpleNamespace

    from harness.gpu.seed_sweep import outcomes, read_results
    from harness.results import RunResult, VariantResult

    names = [f"lr{i}" for i in range(32)]
    oom = "Out of memory (lower --jobs or train.batch_size): CUDA out of memory"
    variants = {n: VariantResult(name=n, status="done" if i < 8 else "failed", error="" if i < 8 else oom)
                for i, n in enumerate(names[:24])}
    RunResult(run_id="r1", variants=variants).save(tmp_path / "runs" / "r1")
    found = read_results(tmp_path)
    assert len(found) == 24
    got = outcomes(names, found, capped=True)
    assert got["counts"] == {"finished": 8, "capped": 8, "failed": 16, "interrupted": 0}
    assert got["by_outcome"]["capped"] == names[24:]
    assert outcomes(names[:1], {"lr0": SimpleNamespace(status="done", error="")}, False)["counts"]["finished"] == 1


def test_the_estimate_stays_above_what_an_engine_process_was_measured_to_use():
    # The H100's measurements: one adapter's engine at its peak (sampling), in use on the device; the 32-variant
    # sweep's one process of groups of 8, the device's peak polled during the sweep.
    from conftest import REPO

    here = REPO / "reports" / "gpu-bench" / "multi-adapter-h100"
    one = json.loads((here / "multi-memory.json").read_text())["ks"]["1"]["sampling"]["graphs"]["after"]
    eight = max(json.loads((here / "bench-part2.json").read_text())["sweep_32"]["device_memory_peak_bytes"].values())
    cost = memory.engine_cost(LLAMA_3_2_3B_CONFIG, _seed())
    assert one["total"] - one["free"] <= cost.bytes(1) <= 1.1 * (one["total"] - one["free"])
    assert eight <= cost.bytes(8) <= 1.1 * eight
