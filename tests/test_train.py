"""Training through the real CLI on the tiny model and real cats: parity, determinism, memorization.

Each run is a fresh `python -m harness train` process (a one-variant run, whose variant runs in
its own child process as `asciitune run` does it), because a process can hold only one backend
(Unsloth patches transformers globally).
"""
from __future__ import annotations

import json
import math

import pytest
from conftest import asciitune, only_run, variant_result

FP32 = 'model.dtype="float32"'


def _train(tmp_path, name: str, *overrides: str, backend: str = "peft") -> dict:
    reports = tmp_path / name
    proc = asciitune("--reports-dir", str(reports), "train", "--config", "tiny", "--backend", backend,
                     "--variant", "base", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return variant_result(only_run(reports), "base")


@pytest.fixture(scope="module")
def peft_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("peft"), "a", FP32)


def test_both_backends_same_code_path_same_initial_loss(tmp_path, peft_run):
    unsloth_run = _train(tmp_path, "u", FP32, backend="unsloth")
    assert unsloth_run["backend"] == "unsloth" and peft_run["backend"] == "peft"
    # Without a GPU, Unsloth runs its CPU fallback and the result must say so.
    assert "CPU fallback" in unsloth_run["backend_note"]
    # Unsloth's CUDA-graph decode needs a GPU: here both backends say their sampling ran eager.
    assert unsloth_run["generation"]["decode"] == "eager"
    assert peft_run["generation"]["decode"] == "eager (transformers generate)"
    # Same code path: same schedule of measurements, same number of optimizer steps and tokens.
    assert unsloth_run["curves"]["steps"] == peft_run["curves"]["steps"]
    assert unsloth_run["train"]["steps"] == peft_run["train"]["steps"]
    assert unsloth_run["train"]["tokens"] == peft_run["train"]["tokens"]
    # Step 0 is measured before any update, with LoRA B initialised to zero: both backends evaluate the
    # same fp32 base weights on the same token batch. Only kernel/reduction order may differ, which in
    # fp32 moves a mean cross-entropy of ~10.8 by far less than 1e-4 relative (fp32 eps is 1.2e-7).
    for key in ("train_loss", "heldout_loss"):
        a, b = peft_run["curves"][key][0], unsloth_run["curves"][key][0]
        assert math.isclose(a, b, rel_tol=1e-4), (key, a, b)


def test_same_seed_gives_same_losses(tmp_path, peft_run):
    again = _train(tmp_path, "b", FP32)
    # Same seed, same data order, same CPU kernels: the whole curve repeats to float round-off.
    for key in ("train_loss", "heldout_loss"):
        assert again["curves"][key] == pytest.approx(peft_run["curves"][key], rel=1e-6)
    assert [x[1] for x in again["curves"]["running_train_loss"]] == \
        pytest.approx([x[1] for x in peft_run["curves"]["running_train_loss"]], rel=1e-6)


def test_result_is_complete(peft_run):
    curves = peft_run["curves"]
    assert len(curves["steps"]) >= 5
    assert len(curves["train_loss"]) == len(curves["heldout_loss"]) == len(curves["steps"])
    assert peft_run["status"] == "done"
    assert peft_run["train"]["tokens"] > 0 and peft_run["train"]["tokens_per_s"] > 0
    assert peft_run["loss_analysis"]["verdict"] in {"learning", "memorizing", "undertrained"}
    assert peft_run["verdict"]["verdict"]
    assert peft_run["generation"]["n"] == 4


def test_far_too_long_on_a_handful_is_memorizing_short_run_is_not(tmp_path):
    # 4 pieces, 60 steps at a high LR: the tiny model memorizes them (measured once by hand: train
    # loss 11.2 -> 4.0 while held-out loss dips to 11.18 and climbs back to 11.35, so the held-out /
    # train ratio grows from 1.03 to 2.8, past the rule's 1.5x). After 4 steps it has not had time to.
    handful = ("data.max_train_pieces=4", "train.batch_size=4", "train.lr=3e-3", "train.eval_points=6",
               "train.eval_heldout_pieces=8", "lora.r=32", "lora.alpha=32")
    long = _train(tmp_path, "long", *handful, "train.max_steps=60")
    short = _train(tmp_path, "short", *handful, "train.max_steps=4")
    assert long["loss_analysis"]["verdict"] == "memorizing", json.dumps(long["loss_analysis"])
    assert short["loss_analysis"]["verdict"] != "memorizing", json.dumps(short["loss_analysis"])
    # train.keep="best" (the default): the saved and sampled adapter is the held-out minimum's, not the last step's
    assert long["train"]["kept"] == "best" and long["train"]["kept_step"] == long["loss_analysis"]["heldout_min_step"]
    assert long["train"]["kept_step"] < long["train"]["steps"] and long["train"]["stopped_at"] is None


def test_stop_on_memorizing_ends_at_the_probe_that_says_so_and_keeps_the_best(tmp_path):
    handful = ("data.max_train_pieces=4", "train.batch_size=4", "train.lr=3e-3", "train.eval_points=6",
               "train.eval_heldout_pieces=8", "lora.r=32", "lora.alpha=32", "train.max_steps=60")
    stopped = _train(tmp_path, "stop", *handful, "train.stop_on=memorizing")
    t, curves = stopped["train"], stopped["curves"]
    assert t["stopped_at"] == curves["steps"][-1] == t["steps"] < 60 and t["steps_saved"] == 60 - t["steps"]
    assert t["steps_planned"] == 60 and stopped["loss_analysis"]["verdict"] == "memorizing"
    assert t["kept_step"] == stopped["loss_analysis"]["heldout_min_step"] < t["stopped_at"]


def test_the_kept_adapter_is_the_one_at_the_best_probe():
    import torch

    from harness.config import TrainConfig
    from harness.results import LossCurves, TrainStats
    from harness.train.keep import Keeper

    model = torch.nn.Linear(3, 2)
    keeper, curves = Keeper(model, TrainConfig()), LossCurves()
    for step, (loss, value) in enumerate([(3.0, 1.0), (2.0, 2.0), (2.5, 3.0)]):
        torch.nn.init.constant_(model.weight, value)
        curves.steps.append(step)
        curves.train_loss.append(1.0)
        curves.heldout_loss.append(loss)
        assert not keeper.observe(curves)  # stop_on="never" by default
    stats = TrainStats(steps=2)
    keeper.finish(stats, planned_steps=2)
    assert torch.all(model.weight == 2.0) and stats.kept_step == 1 and stats.kept == "best"
    last = Keeper(model, TrainConfig(keep="last"))
    torch.nn.init.constant_(model.weight, 5.0)
    curves.heldout_loss[-1] = 9.0
    last.observe(curves)
    last.finish(stats, planned_steps=2)
    assert torch.all(model.weight == 5.0) and stats.kept_step == 2
