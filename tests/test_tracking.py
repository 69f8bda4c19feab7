"""Experiment tracking: `train.report_to` reaches TRL, and TensorBoard (offline) gets the losses and final scores.

The end-to-end test runs the real CLI on the tiny model, as a user would:
`asciitune --reports-dir TMP run --config tiny train.report_to=tensorboard`, then reads the event files back.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import asciitune, only_run

from harness.config import RunConfig, apply_overrides
from harness.train.sft import sft_config, trackers, tracking_dir, uses_tensorboard


def _cfg(report_to: str) -> RunConfig:
    return apply_overrides(RunConfig(), {"train.report_to": report_to})


@pytest.mark.parametrize("value, names, tensorboard", [
    ("none", [], False), ("tensorboard", ["tensorboard"], True),
    (" tensorboard, wandb ", ["tensorboard", "wandb"], True), ("all", ["all"], True), ("wandb", ["wandb"], False),
    ("none,tensorboard", [], False),
])
def test_report_to_is_parsed_once(value: str, names: list[str], tensorboard: bool) -> None:
    assert trackers(_cfg(value)) == names and uses_tensorboard(_cfg(value)) is tensorboard


def test_report_to_reaches_sft_config(tmp_path: Path) -> None:
    assert RunConfig().train.report_to == "none"
    assert sft_config(RunConfig(), tmp_path).report_to == []  # transformers reads "none" as no tracker
    assert sft_config(_cfg("tensorboard"), tmp_path).report_to == ["tensorboard"]
    assert tracking_dir(tmp_path / "run" / "checkpoints" / "r8") == tmp_path / "run" / "tensorboard" / "r8"


def _scalars(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags["scalars"]}, tags["tensors"]


def test_tensorboard_gets_train_loss_probe_losses_and_scores(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    reports = tmp_path / "reports"
    proc = asciitune("--reports-dir", str(reports), "run", "--config", "tiny", "train.report_to=tensorboard",
                     "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_run(reports)
    folder = run_dir / "tensorboard" / "base"
    assert list(folder.glob("events.out.tfevents.*")), sorted(str(p) for p in run_dir.rglob("*"))
    scalars, texts = _scalars(folder)
    result = json.loads((run_dir / "results.json").read_text())["variants"]["base"]
    curves, steps = result["curves"], result["train"]["steps"]
    # TRL's running train loss, at every optimizer step (logging_steps=1): none lost to the probe logging.
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, steps + 1))
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in curves["running_train_loss"]],
                                                                  rel=1e-5)
    # The fixed-probe losses at the same steps as results.json (TensorBoard stores float32).
    for tag, key in (("eval/heldout_loss", "heldout_loss"), ("eval/train_probe_loss", "train_loss")):
        assert [s for s, _ in scalars[tag]] == curves["steps"]
        assert [v for _, v in scalars[tag]] == pytest.approx(curves[key], rel=1e-5)
    # Final scores and the loss analysis at the last step, and the verdict as text.
    for name in ("novelty", "valid_rate", "width_consistency"):
        value = result["scores"]["metrics"][name]["value"]
        if value is None:  # novelty and widths are over valid samples: none when the tiny model drew no valid art
            assert f"final/{name}" not in scalars
            continue
        assert scalars[f"final/{name}"] == [(steps, pytest.approx(value, rel=1e-5))]
    assert scalars["final/heldout_min"][0][1] == pytest.approx(result["loss_analysis"]["heldout_min"], rel=1e-5)
    assert "final/verdict/text_summary" in texts
