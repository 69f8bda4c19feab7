"""`asciitune bench --workload seed`: scheduling, the document's arithmetic (pure), and one CPU run end to end.

    pytest tests/test_bench_seed.py               # the pure parts (a second)
    pytest tests/test_bench_seed.py -m slow       # the CLI on the tiny model: arms and a 2-variant sweep (~2 min)
"""
from __future__ import annotations

import json

import pytest
from conftest import asciitune

from harness.config import load_plan
from harness.gpu.seed import SCHEDULE, SWEEP_LRS, Item, cap_for, jobs_for, sweep_lrs, toml_text
from harness.gpu.seed_summary import PARITY_RTOL, arm_row, full_seconds, parity, targets

GIB = 1024 ** 3


def test_caps_keep_later_reserves_and_skip_under_minimum():
    sched = [Item("a", max_s=100, reserve_s=0, min_s=30), Item("b", max_s=50, reserve_s=40, min_s=20)]
    assert cap_for(sched, 0, 500) == 100
    assert cap_for(sched, 0, 100) == 60  # b keeps its 40 s
    assert cap_for(sched, 0, 60) == 0.0  # 20 s left for a is under its 30 s minimum: skipped
    assert cap_for(sched, 1, 45) == 45
    names = [x.name for x in SCHEDULE]
    assert names[:3] == ["fast-unsloth", "fast-peft", "seed-unsloth"] and "sweep" in names


def test_jobs_fit_the_fast_arms_peak():
    assert jobs_for(14 * GIB, 140 * GIB, 8) == 3  # three processes share the card, three or two variants each
    assert jobs_for(50 * GIB, 140 * GIB, 8) == 2  # memory-bound: 3 x 51 GiB is over 95% of 140 GiB
    assert jobs_for(80 * GIB, 140 * GIB, 8) == 1
    assert jobs_for(200 * GIB, 140 * GIB, 8) == 1
    assert jobs_for(None, None, 8) == 3 and jobs_for(None, None, 2) == 2 and jobs_for(None, None, 1) == 1
    # Variants are dealt round-robin to the processes: the base lr lands second in the first one.
    for jobs in (2, 3, 4):
        lrs = sweep_lrs(8, 2e-4, jobs)
        assert sorted(lrs) == sorted(SWEEP_LRS) and lrs[0::jobs][1] == 2e-4


def test_sweep_config_round_trips_through_load_plan(tmp_path):
    base = load_plan("seed", ["train.plan=fast"]).base
    path = tmp_path / "sweep.toml"
    path.write_text(toml_text(base, {"train.lr": [1e-4, 2e-4, 3e-4]}))
    plan = load_plan(str(path))
    assert len(plan.variants) == 3
    assert sorted(v.train.lr for v in plan.variants.values()) == [1e-4, 2e-4, 3e-4]
    v = next(iter(plan.variants.values()))
    assert v.train.plan == "fast" and v.lora == base.lora and v.generate == base.generate


def _seed_rec(steps: int, planned: int = 10) -> dict:
    return {"name": "seed-unsloth", "backend": "unsloth", "plan": "seed", "status": "loaded", "steps": steps,
            "steps_planned": planned, "step_s": [5.0] + [1.0] * (steps - 1), "tokens_per_step": [100] * steps,
            "losses": [10.0 - k * 0.5 for k in range(steps)], "peak_reserved_bytes": 8 * GIB, "sequences": 8 * steps,
            "arch": {"hidden_size": 64}}


def test_partial_seed_arm_is_measured_and_extrapolated_separately():
    row = arm_row(_seed_rec(4), peak_tflops=None, fpt=None)
    assert row["partial"] and row["train_seconds"] == 8.0 and row["warmup_seconds"] == 5.0
    assert row["train_seconds_extrapolated"] == 14.0  # 5 + 1 x 9: labelled, not a measurement
    assert "extrapolation" in row["extrapolation"] and full_seconds(row) == 14.0
    assert row["tokens_per_s"] == 50.0  # measured tokens over measured seconds
    full = arm_row(_seed_rec(10), peak_tflops=100.0, fpt=lambda arch, seq: 1e9)
    assert not full["partial"] and full_seconds(full) == 14.0 and full["mfu"] == pytest.approx(1000 / 14 * 1e9 / 1e14,
                                                                                                  rel=1e-3)


def test_parity_and_targets():
    seed = {**_seed_rec(10), "status": "ok", "train_seconds": 14.0}
    fast = {"name": "fast-unsloth", "backend": "unsloth", "plan": "fast", "status": "ok", "steps": 10,
            "steps_planned": 10, "train_seconds": 1.2, "warmup_seconds": 3.0, "tokens": 1000,
            "peak_reserved_bytes": 11 * GIB, "losses": [x * (1 + 0.004) for x in seed["losses"]]}
    peft = {**fast, "name": "fast-peft", "backend": "peft", "losses": [x * 1.01 for x in seed["losses"]]}
    q_u = {**fast, "name": "qlora-fast-unsloth", "load_in_4bit": True, "losses": [x * 1.03 for x in seed["losses"]]}
    q_p = {**q_u, "name": "qlora-fast-peft", "backend": "peft"}
    raw = {r["name"]: r for r in (seed, fast, peft, q_u, q_p)}
    par = parity(raw)
    assert par["tolerance"] == PARITY_RTOL and par["reference_complete"]
    assert par["arms"]["fast-unsloth"]["ok"] and not par["arms"]["fast-peft"]["ok"] and not par["ok"]
    assert par["max_rel_diff"] == pytest.approx(0.01)
    assert "qlora-fast-unsloth" not in par["arms"] and par["qlora"]["qlora-fast-unsloth"]["vs_bf16_seed"]["ok"]
    assert par["qlora"]["unsloth_vs_peft"]["max_rel_diff"] == pytest.approx(0.0)
    rows = {n: arm_row(r, None, None) for n, r in raw.items()}
    sweep = {"variants": 8, "done": 8, "wall_seconds": 150.0, "target_seconds": 180.0}
    t = targets(rows, par, sweep)
    assert t["fast_steps_seconds"]["met"] and t["speedup_vs_seed_unsloth"]["value"] == pytest.approx(11.67, rel=1e-3)
    assert t["speedup_vs_seed_unsloth"]["met"] and t["fast_peak_vs_seed_peak"]["value"] == 1.375
    assert t["fast_peak_vs_seed_peak"]["met"] and t["fast_end_to_end_beats_seed"]["met"]  # 4.2 s vs 14 s
    assert t["parity_max_rel_diff"]["met"] is False and t["sweep_wall_seconds"]["met"]
    unfinished = targets(rows, par, {**sweep, "done": 7})
    assert unfinished["sweep_wall_seconds"]["met"] is False and unfinished["sweep_wall_seconds"]["value"] is None


@pytest.mark.slow
def test_bench_seed_workload_on_cpu(tmp_path):
    """The real CLI on the tiny model: two arms and a two-variant sweep, each in its own process."""
    out = tmp_path / "seed-workload.json"
    proc = asciitune("--reports-dir", str(tmp_path / "reports"), "bench", "--workload", "seed", "--config", "tiny",
                     "--arms", "fast-peft,seed-peft,qlora-fast-peft,sweep,sweep-solo", "--variants", "2", "--jobs",
                     "2", "--budget-s", "900", "--out", str(out), 'model.dtype="float32"', timeout=1200)
    doc = json.loads(out.read_text())
    rows = {r["name"]: r for r in doc["arms"]}
    assert rows["fast-peft"]["status"] == "ok" and rows["seed-peft"]["status"] == "ok", proc.stdout[-2000:]
    assert rows["qlora-fast-peft"]["status"].startswith("refused: model.load_in_4bit needs an NVIDIA GPU")
    assert rows["fast-peft"]["steps"] == rows["seed-peft"]["steps"] == 8  # tiny.toml: max_steps = 8
    sweep = doc["sweep"]
    assert sweep["done"] == 2 and sweep["engine"] == "multi-adapter" and len(sweep["processes"]) == 1, sweep
    assert all(r["engine"] == "multi-adapter, K=2" and "train" in r["shared_phases"] for r in sweep["per_variant"])
    # Each variant trained beside the other against the same lr trained alone (fp32: summation order only).
    assert sweep["parity_ok"] and len(sweep["parity"]) == 2 and sweep["parity_max_rel_diff"] < 1e-4, sweep["parity"]
    assert doc["targets"]["sweep_parity_max_rel_diff"]["met"] is True
    raw = json.loads((tmp_path / "seed-workload-raw.json").read_text())["arms"]
    fast, seed = raw["fast-peft"]["losses"], raw["seed-peft"]["losses"]
    assert len(fast) == len(seed) == 8
    # fp32 on the CPU, same optimizer (adamw_torch): only summation order differs (tests/test_fast_plan.py).
    assert fast == pytest.approx(seed, rel=1e-4)
    assert proc.returncode == 1  # the refused 4-bit arm is not "ok"


def test_sweep_parity_and_processes_from_results():
    from harness.gpu.seed_sweep import processes, sweep_parity

    losses = {"a": {"lr": 1e-4, "losses": [2.0, 1.5, 1.0]}, "b": {"lr": 2e-4, "losses": [2.0, 1.4, 1.02]}}
    solo = {repr(1e-4): [2.0, 1.5, 1.0], repr(2e-4): [2.0, 1.4, 1.0]}
    par = sweep_parity(losses, solo, PARITY_RTOL)
    assert par["parity"]["a"]["max_rel_diff"] == 0.0 and par["parity_max_rel_diff"] == pytest.approx(0.02)
    assert par["parity"]["b"]["worst_step"] == 3 and not par["parity_ok"]
    assert not sweep_parity(losses, {repr(1e-4): [2.0, 1.5, 1.0]}, PARITY_RTOL)["parity_ok"]  # b has no reference
    # b's solo run differs from itself by 3% when trained again: that spread, not 0.5%, bounds b; a's stays 0.5%
    rerun = {repr(1e-4): [2.0, 1.5, 1.0], repr(2e-4): [2.0, 1.4, 0.97]}
    fused = {repr(2e-4): [2.0, 1.41, 1.0]}
    par = sweep_parity(losses, solo, PARITY_RTOL, rerun, fused)
    assert par["parity_ok"] and par["parity"]["a"]["bound"] == PARITY_RTOL
    assert par["parity"]["b"]["bound"] == pytest.approx(0.03) and par["parity"]["b"]["rerun_spread"] == \
        pytest.approx(0.03)
    assert par["parity"]["b"]["solo_fused_vs_plain"] == pytest.approx(0.01 / 1.4)  # reported beside, not bounded
    assert par["parity"]["a"]["solo_fused_vs_plain"] is None
    rows = [{"name": n, "pid": 7, "engine": "multi-adapter, K=2", "shared_phases": ["load", "train", "generate"],
             "phases": {"load": 30.0, "train": 20.0, "save": s, "generate": 9.0, "judge": 1.0}} for n, s in
            (("a", 0.5), ("b", 0.7))]
    (proc,) = processes(rows)  # shared phases once, each variant's own summed: the process's wall time
    assert proc["phases"] == {"load": 30.0, "train": 20.0, "save": 1.2, "generate": 9.0, "judge": 2.0}
    assert proc["seconds"] == 62.2 and proc["variants"] == ["a", "b"]


@pytest.mark.parametrize("command", ["run", "bench"])
def test_jobs_below_one_is_one_sentence_for_run_and_bench(tmp_path, capsys, command):
    """`--jobs 0` is refused before anything runs (bench once read it as "use the default")."""
    from harness.cli.main import main

    # --out inside tmp_path: were the flag accepted, the bench must not overwrite the committed GPU document
    extra = ["--workload", "seed", "--out", str(tmp_path / "seed-workload.json")] if command == "bench" else []
    with pytest.raises(SystemExit) as exc:
        main(["--reports-dir", str(tmp_path), command, "--config", "tiny", *extra, "--jobs", "0"])
    assert exc.value.code == 2
    assert "--jobs takes a whole number of 1 or more, not '0'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_merging_a_new_call_keeps_its_setup_log_and_whether_its_sweep_had_bytecode(tmp_path, monkeypatch):
    # reports/gpu-bench/make_seed_workload.py over the committed merge plus one new call: the new sweep becomes
    # the sweep with bytecode_cached from the call's environment, the old one moves to other_sweeps with what it
    # had, and the call's setup log (e.g. its compileall) is kept verbatim in the calls history.
    import copy
    import importlib.util

    from conftest import REPO

    here = REPO / "reports" / "gpu-bench"
    spec = importlib.util.spec_from_file_location("make_seed_workload", here / "make_seed_workload.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "DOC", tmp_path / "seed-workload.json")
    monkeypatch.setattr(mod, "RAW", tmp_path / "seed-workload-raw.json")
    committed = json.loads((here / "seed-workload.json").read_text())
    committed_raw = json.loads((here / "seed-workload-raw.json").read_text())
    prev, new = tmp_path / "prev", tmp_path / "new"
    prev.mkdir()
    (prev / "seed-workload.json").write_text(json.dumps(committed))
    (prev / "seed-workload-raw.json").write_text(json.dumps(committed_raw))
    call = {k: v for k, v in copy.deepcopy(committed).items() if k not in ("calls", "other_sweeps")}
    call.update(date="2030-01-01T00:00:00+00:00", wall_seconds=200.0)
    call["environment"]["python_bytecode"] = {"dont_write_bytecode": True, "pycache_prefix": "",
                                              "cached": {"unsloth": False, "torch": True}}
    call["sweep"] = {k: v for k, v in call["sweep"].items() if k not in ("measured_in", "bytecode_cached")}
    call["sweep"]["wall_seconds"] = 191.0
    new.mkdir()
    (new / "seed-workload.json").write_text(json.dumps(call))
    (new / "seed-workload-raw.json").write_text(json.dumps({"arms": {}, "sweep": committed_raw["sweep"]}))
    (new / "setup.txt").write_text("compileall rc 0 10 s\n")
    mod.merge([prev, new])
    merged = json.loads(mod.DOC.read_text())
    k = len(committed["calls"]) + 1
    assert merged["calls"][-1]["call"] == k and merged["calls"][-1]["setup_log"] == "compileall rc 0 10 s"
    assert merged["sweep"]["wall_seconds"] == 191.0 and merged["sweep"]["bytecode_cached"] is False
    assert merged["sweep"]["measured_in"].startswith(f"call {k} ")
    moved = merged["other_sweeps"][-1]
    assert moved["wall_seconds"] == committed["sweep"]["wall_seconds"]
    assert moved["bytecode_cached"] == committed["sweep"]["bytecode_cached"]
    assert len(merged["other_sweeps"]) == len(committed["other_sweeps"]) + 1
    assert [a["name"] for a in merged["arms"]] == [a["name"] for a in committed["arms"]]  # arms kept, with their calls


def test_bench_keeps_another_cards_document_at_the_default_out(tmp_path, capsys, monkeypatch):
    """By default `bench --workload seed` writes reports/gpu-bench/seed-workload.json: run from a checkout on
    another machine it would replace the committed H200 measurement, so it refuses in one sentence."""
    from harness.cli.bench import _keep_other_cards_document
    from harness.cli.main import main

    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "reports" / "gpu-bench" / "seed-workload.json"
    doc.parent.mkdir(parents=True)
    doc.write_text(json.dumps({"card": "NVIDIA H200", "arms": []}))
    before = doc.read_text()
    code = main(["--reports-dir", str(tmp_path / "runs"), "bench", "--workload", "seed", "--config", "tiny"])
    assert code == 2
    err = capsys.readouterr().err
    assert "holds a measurement made on NVIDIA H200" in err and "pass --out" in err
    assert doc.read_text() == before and not (tmp_path / "runs").exists()
    _keep_other_cards_document(doc, explicit=True)  # --out naming this very path replaces it: no refusal


def test_unknown_arms_are_one_sentence_before_anything_runs(tmp_path, capsys):
    from harness.cli.main import main

    code = main(["--reports-dir", str(tmp_path), "bench", "--workload", "seed", "--config", "tiny", "--arms",
                 "sweep,no-such-arm", "--out", str(tmp_path / "seed-workload.json")])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown --arms item(s) no-such-arm: choose from fast-unsloth," in err, err
    assert not (tmp_path / "seed-workload.json").exists()


def test_sweep_solo_alone_writes_its_arm_and_parity_and_exits_0(tmp_path, monkeypatch, capsys):
    """`bench --arms sweep-solo` alone: its arm row and its own parity (each lr's rerun spread, fused against plain)
    in the document, exit 0 (it used to write no arm and exit 1). The arm's process is faked: its record as
    harness.gpu.seed_arm.run_solo_sweep writes it."""
    from harness.cli.main import main
    from harness.gpu import seed, worker

    lrs = [repr(x) for x in sweep_lrs(2, 2e-4, 1)]
    losses = {lr: [2.0, 1.5, 1.2] for lr in lrs}

    def fake_arm(base, item, work, cap, mode="auto", extra=()):
        assert item.name == "sweep-solo" and "--sweep-lrs" in extra
        return {"name": item.name, "backend": "peft", "plan": "fast", "status": "ok", "steps": 3, "wall_seconds": 9.0,
                "load_s": 1.0, "sweep_losses": losses, "sweep_train_seconds": dict.fromkeys(lrs, 0.5),
                "sweep_warmup_seconds": dict.fromkeys(lrs, 0.1),
                "sweep_rerun_losses": {lrs[0]: [2.0, 1.5, 1.203]}, "sweep_fused_losses": {},
                "peak_reserved_bytes": GIB}

    monkeypatch.setattr(seed, "run_arm", fake_arm)
    monkeypatch.setattr(worker, "measure_matmul_tflops", lambda: 100.0)
    out = tmp_path / "solo.json"
    code = main(["--reports-dir", str(tmp_path / "reports"), "bench", "--workload", "seed", "--config", "tiny",
                 "--arms", "sweep-solo", "--variants", "2", "--out", str(out)])
    doc = json.loads(out.read_text())
    row = {r["name"]: r for r in doc["arms"]}["sweep-solo"]
    assert code == 0, capsys.readouterr()
    assert row["status"] == "ok" and row["variants_done"] == 2 and row["train_seconds"] == 1.0
    par = doc["sweep_solo"]["parity"]
    assert par["per_lr"][lrs[0]]["rerun_spread"] == pytest.approx(0.003 / 1.2) and par["per_lr"][lrs[1]]["steps"] == 3
    assert par["max_rerun_spread"] == pytest.approx(0.003 / 1.2)
