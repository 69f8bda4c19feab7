"""Executors on the CPU: `--jobs N` child processes and Ray tasks give the runner's results, failures and resumes.

Every run goes through the real CLI in a fresh process on the tiny random Llama (2 optimizer steps,
2 short samples per variant). One sequential run (`--jobs 1`) of variants a and b is the reference;
`--jobs 2` and `--executor ray` must give the same variants, per-probe losses and verdicts, while a
third variant that cannot load its LoRA target is recorded as failed and the others finish.
Interrupts (SIGINT to the CLI once a variant is in results.json) are `slow`: about two runs each.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, asciitune

from harness import procs
from harness.train import executors, ray_executor

# The tiny config cut to the bone: what differs between executors is the process around a variant, not its size.
CONFIG = """
[model]
name = "tiny"
backend = "peft"
[lora]
r = 8
alpha = 8
gradient_checkpointing = "false"
[data]
max_train_pieces = 8
[train]
batch_size = 2
grad_accum = 1
max_steps = 2
lr = 1e-3
warmup_steps = 0
eval_points = 1
eval_heldout_pieces = 4
[generate]
n_samples = 2
max_new_tokens = 16
[variants.a]
"lora.r" = 4
[variants.b]
"lora.r" = 8
[variants.c]
"lora.r" = 2
[variants.bad]  # passes every check before the run, then fails inside its process: PEFT finds no such module
"lora.target_modules" = ["no_such_proj"]
[variants.fast1]  # fast-plan variants over one base: one process trains them one after another
"train.plan" = "fast"
[variants.fast2]
"train.plan" = "fast"
"train.lr" = 3e-3
[variants.fastbad]  # trains, then fails at sampling (an empty prompt encodes to no token)
"train.plan" = "fast"
"generate.prompt" = ""
"""
# Children on another thread count sum in another order: float32 losses agree to ~1e-6 relative, not bit for bit;
# a variant trained in the multi-adapter engine beside others differs from its solo run by summation order only
# (tests/test_multi_engine.py).
LOSS_RTOL = 1e-4


def _config(tmp: Path) -> Path:
    path = tmp / "executors.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def _run(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path, dict]:
    proc = asciitune("--reports-dir", str(tmp / "reports"), "run", "--config", str(_config(tmp)), "--no-report", *args)
    runs = sorted((tmp / "reports" / "runs").glob("*/results.json"))
    assert runs, proc.stdout + proc.stderr
    return proc, runs[-1].parent, json.loads(runs[-1].read_text())


def _outcome(results: dict, name: str) -> dict:
    v = results["variants"][name]
    return {"status": v["status"], "train": v["curves"]["train_loss"], "heldout": v["curves"]["heldout_loss"],
            "verdict": v["verdict"]["verdict"], "loss_verdict": v["loss_analysis"]["verdict"]}


def _same_as(reference: dict, results: dict, names: tuple[str, ...]) -> None:
    for name in names:
        want, got = _outcome(reference, name), _outcome(results, name)
        assert got["status"] == "done" and got["verdict"] == want["verdict"], (name, got, want)
        assert got["loss_verdict"] == want["loss_verdict"], name
        assert got["train"] == pytest.approx(want["train"], rel=LOSS_RTOL), name
        assert got["heldout"] == pytest.approx(want["heldout"], rel=LOSS_RTOL), name


def _failed_alone(results: dict, run_dir: Path) -> None:
    bad = results["variants"]["bad"]
    assert bad["status"] == "failed" and "no_such_proj" in bad["error"], bad["error"]
    assert (run_dir / "logs" / "bad.log").is_file()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """Variants a and b one after another (the default executor)."""
    tmp = tmp_path_factory.mktemp("jobs1")
    proc, _, results = _run(tmp, "--variants", "a,b", "--jobs", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return results


def test_jobs_2_matches_jobs_1_and_a_failure_stays_alone(tmp_path, reference):
    proc, run_dir, results = _run(tmp_path, "--variants", "a,b,bad", "--jobs", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one variant failed
    assert "2 variants at once, 1 CPU thread(s) each" in proc.stdout
    assert list(results["variants"]) == ["a", "b", "bad"]  # the config's order, whatever order they ended in
    _same_as(reference, results, ("a", "b"))
    _failed_alone(results, run_dir)
    for name in ("a", "b"):  # each child got its share of the two cores, not all of them
        assert "(x86_64, 1 threads)" in (run_dir / "logs" / f"{name}.log").read_text()


def test_fast_variants_train_together_in_the_multi_adapter_engine_and_match_their_own_runs(tmp_path):
    proc, run_dir, results = _run(tmp_path, "--variants", "fast1,fast2,fastbad", "--jobs", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # fastbad failed
    assert "3 fast-plan variants train together in 1 multi-adapter engine group(s) in 1 process(es)" in proc.stdout
    v = results["variants"]
    assert v["fast1"]["status"] == v["fast2"]["status"] == "done"
    assert v["fastbad"]["status"] == "failed" and "zero tokens" in v["fastbad"]["error"], v["fastbad"]["error"]
    assert v["fast2"]["train"]["engine"] == "multi-adapter, K=3"
    assert "multi-adapter engine" in v["fast2"]["backend_note"]
    assert "[fast2] step 2: train loss" in (run_dir / "logs" / "fast1.log").read_text()  # one child, one log
    t1, t2 = v["fast1"]["timing"], v["fast2"]["timing"]
    assert t1["pid"] == t2["pid"] > 0
    assert list(t1["phases"]) == ["start", "import", "load", "train", "save", "generate", "judge"]
    assert t1["phases"]["train"] == t2["phases"]["train"] and "train" in t1["shared"]  # trained once, for both
    (tmp_path / "alone").mkdir()
    _, _, alone = _run(tmp_path / "alone", "--variants", "fast2", "--jobs", "1")
    a, b = alone["variants"]["fast2"], v["fast2"]
    assert a["status"] == "done" and a["train"]["engine"] == "solo"
    for key in ("train_loss", "heldout_loss"):  # trained beside two others = trained alone
        assert b["curves"][key] == pytest.approx(a["curves"][key], rel=LOSS_RTOL), key
    running = [[x[1] for x in r["curves"]["running_train_loss"]] for r in (a, b)]
    assert len(running[0]) == 2 and running[1] == pytest.approx(running[0], rel=LOSS_RTOL)


@pytest.mark.slow
def test_fast_variants_share_a_process_one_after_another_without_the_multi_adapter_engine(tmp_path):
    proc, run_dir, results = _run(tmp_path, "--variants", "fast1,fast2,fastbad", "--jobs", "1", "--no-multi-adapter")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # fastbad failed
    assert "3 fast-plan variants share 1 process(es)" in proc.stdout
    v = results["variants"]
    assert v["fast1"]["status"] == v["fast2"]["status"] == "done"
    assert v["fastbad"]["status"] == "failed" and "zero tokens" in v["fastbad"]["error"], v["fastbad"]["error"]
    assert "model shared with the variant before it" in v["fast2"]["backend_note"]
    assert v["fast2"]["train"]["engine"] == "solo"
    assert "[fast2] step 2: train loss" in (run_dir / "logs" / "fast1.log").read_text()  # one child, one log
    t1, t2 = v["fast1"]["timing"], v["fast2"]["timing"]  # where the time went, per variant, in one process
    assert t1["pid"] == t2["pid"] > 0 and t1["spawned_at"] == t2["spawned_at"] > 0
    assert list(t1["phases"]) == ["start", "import", "load", "train", "save", "generate", "judge"]
    assert list(t2["phases"]) == ["import", "load", "train", "save", "generate", "judge"]  # no start of its own
    assert t1["phases"]["start"] > 0 and t2["phases"]["load"] < t1["phases"]["load"] / 5  # the model was kept
    assert 0 < t2["phases"]["train"] < time.time() - t1["spawned_at"], (t1, t2)
    (tmp_path / "alone").mkdir()
    _, _, alone = _run(tmp_path / "alone", "--variants", "fast2", "--jobs", "1")
    a, b = alone["variants"]["fast2"], v["fast2"]
    assert a["status"] == "done" and "shared" not in a["backend_note"]
    for key in ("train_loss", "heldout_loss"):  # the second in a process = a fresh process
        assert b["curves"][key] == pytest.approx(a["curves"][key], rel=1e-6), key
    running = [[x[1] for x in r["curves"]["running_train_loss"]] for r in (a, b)]
    assert len(running[0]) == 2 and running[1] == pytest.approx(running[0], rel=1e-6)


def test_ray_matches_local_and_a_raising_task_stays_alone(tmp_path, reference):
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    proc, run_dir, results = _run(tmp_path, "--variants", "a,b,bad", "--executor", "ray")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "as Ray tasks on a local Ray instance" in proc.stdout
    _same_as(reference, results, ("a", "b"))
    _failed_alone(results, run_dir)
    # Everything came back through the object store into the one run folder.
    for name in ("a", "b"):
        assert (run_dir / "variants" / f"{name}.json").is_file() and (run_dir / f"samples-{name}.jsonl").is_file()
        assert (run_dir / "adapters" / name / "adapter_model.safetensors").is_file()
        assert "step 2: train loss" in (run_dir / "logs" / f"{name}.log").read_text()


def _interrupt_after_first(tmp: Path, *args: str) -> tuple[int, Path, str]:
    """Start a run of a, b and c; SIGINT the CLI once results.json holds a finished variant."""
    cmd = [sys.executable, "-m", "harness", "--reports-dir", str(tmp / "reports"), "run", "--config",
           str(_config(tmp)), "--no-report", "--variants", "a,b,c", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 400
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted((tmp / "reports" / "runs").glob("*/results.json"))
        try:
            if found and any(v["status"] == "done" for v in json.loads(found[-1].read_text())["variants"].values()):
                run_dir = found[-1].parent
                break
        except ValueError:  # never half-written (atomic writes), but be safe
            pass
        time.sleep(0.5)
    assert run_dir is not None, proc.communicate()[0]
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    return proc.returncode, run_dir, out


def _resume_completes(tmp: Path, run_dir: Path, *args: str) -> None:
    done_before = [n for n, v in json.loads((run_dir / "results.json").read_text())["variants"].items()
                   if v["status"] == "done"]
    assert 1 <= len(done_before) < 3, done_before
    proc, _, _ = _run(tmp, "--variants", "a,b,c", "--resume", str(run_dir), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert all(results["variants"][n]["status"] == "done" for n in "abc")
    for name in done_before:
        assert f"{name}: done earlier, skipped (--resume)" in proc.stdout


def _children_of(run_dir: Path) -> list[str]:
    """Processes still running a job file of this run."""
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "harness.train.job" in text and str(run_dir) in text:
            alive.append(text)
    return alive


@pytest.mark.slow
def test_jobs_interrupt_stops_every_child_and_resume_completes(tmp_path):
    code, run_dir, out = _interrupt_after_first(tmp_path, "--jobs", "2")
    assert code == 130, out
    assert "rerun with --resume" in out
    assert not _children_of(run_dir)
    _resume_completes(tmp_path, run_dir, "--jobs", "2")


@pytest.mark.slow
def test_ray_interrupt_cancels_tasks_and_local_resume_completes(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    code, run_dir, out = _interrupt_after_first(tmp_path, "--executor", "ray")
    assert code == 130, out
    assert "rerun with --resume" in out
    _resume_completes(tmp_path, run_dir, "--jobs", "2")  # the other executor finishes what Ray started


# ---- fast checks, no training ----------------------------------------------------------------------------------

def test_children_spread_round_robin_over_gpus():
    load = {"0": 0, "1": 0}
    picks = []
    for _ in range(5):
        gpu = executors.least_loaded(load)
        load[gpu] += 1
        picks.append(gpu)
    assert picks == ["0", "1", "0", "1", "0"]
    load["0"] -= 2  # two finished on GPU 0: the next goes there
    assert executors.least_loaded(load) == "0"
    assert executors.child_env("3", None) == {"CUDA_VISIBLE_DEVICES": "3"}
    assert executors.child_env(None, 4) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}


def test_visible_gpus_honour_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert executors.visible_gpus() == ["5", "7"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert executors.visible_gpus() == ["0", "1"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert executors.visible_gpus() == []


def test_stop_kills_a_child_that_ignores_sigint(monkeypatch):
    monkeypatch.setattr(procs, "STOP_GRACE_S", 1)
    children = executors.Children()
    code = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(60)")
    proc = children.start([sys.executable, "-c", code], {})
    assert proc.stdout.readline().strip() == "ready"
    children.stop()
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert children.start([sys.executable, "-c", "pass"], {}) is None  # nothing starts once stopping


def test_unpack_stays_inside_the_run_folder(tmp_path):
    ray_executor.unpack(tmp_path, {"adapters/a/x.bin": b"1", "logs/a.log": b"ok"})
    assert (tmp_path / "adapters" / "a" / "x.bin").read_bytes() == b"1"
    with pytest.raises(ValueError):
        ray_executor.unpack(tmp_path / "run", {"../escape": b"x"})


def test_ray_missing_is_one_sentence_before_any_run_folder(tmp_path, monkeypatch, capsys):
    from harness.cli.main import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as where it is absent
    code = main(["--reports-dir", str(tmp_path), "run", "--config", "tiny", "--executor", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "pip install -e '.[ray]'" in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["--ray-address", "auto"], "--ray-address only apply with --executor ray"),
    (["--executor", "ray", "--ray-gpus-per-variant", "-1"], "must be 0 or more"),
])
def test_bad_executor_flags_are_one_sentence(tmp_path, capsys, args, message):
    from harness.cli.main import main

    code = main(["--reports-dir", str(tmp_path), "run", "--config", "tiny", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
