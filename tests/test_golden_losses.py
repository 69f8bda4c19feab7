"""Golden losses: the tiny config's per-step training losses and probe curves, stored, on both plans (CPU, fp32).

Tests elsewhere compare runs with each other, so a change to the training math that moves every run alike would
pass them; this one compares with numbers stored in tests/golden/tiny-losses.json. Re-make them (after a change
that is meant to move them, with the reason in the commit) with:

    ASCIITUNE_WRITE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_losses.py

Tolerance: 1e-4 relative per value. The same run repeats to 1e-6 on one machine (tests/test_train.py), and fp32
kernels of another CPU move a mean cross-entropy by far less than 1e-4. Measured when the file was made (the
fast plan, largest per-step change): another data order (train.seed 1) 2.7e-2, 3 warm-up steps 3.6e-3; the same
steps cut into two micro-batches 0 (per-token normalisation over the whole step, as it should be).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny-losses.json"
RTOL = 1e-4


def _losses(plan: str, **train) -> dict:
    """The tiny config's base variant trained on one plan, in this process: per-step and probe losses."""
    from harness import backends
    from harness.config import load_plan
    from harness.data import build_dataset
    from harness.models import resolve
    from harness.train.fast import plan as fast
    from harness.train.sft import train_variant

    cfg = load_plan("tiny", ['model.dtype="float32"', f"train.plan={plan}"]).base
    cfg = replace(cfg, train=replace(cfg.train, **train))
    backend = backends.get("peft")
    model, tok, _ = backend.load(resolve(cfg.model.name), fast.load_config(cfg))
    backend.for_training(model)
    ds = build_dataset(cfg.data)
    run = fast.train_variant_fast if plan == "fast" else train_variant
    with tempfile.TemporaryDirectory() as out:
        curves, _ = run(model, tok, ds, cfg, Path(out))
    return {"steps": [s for s, _ in curves.running_train_loss], "train": [x for _, x in curves.running_train_loss],
            "probe_steps": curves.steps, "probe_train": curves.train_loss, "probe_heldout": curves.heldout_loss}


@pytest.fixture(scope="module")
def measured() -> dict:
    return {plan: _losses(plan) for plan in ("seed", "fast")}


def test_tiny_losses_equal_the_stored_ones(measured):
    if os.environ.get("ASCIITUNE_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(measured, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for plan in ("seed", "fast"):
        got, want = measured[plan], golden[plan]
        assert got["steps"] == want["steps"] and got["probe_steps"] == want["probe_steps"], plan
        for key in ("train", "probe_train", "probe_heldout"):
            assert got[key] == pytest.approx(want[key], rel=RTOL), (plan, key)


@pytest.mark.parametrize("change", [{"seed": 1}, {"warmup_steps": 3}, {"batch_size": 1, "grad_accum": 2}],
                         ids=["data order", "lr schedule", "normalisation over two micro-batches"])
def test_a_change_to_the_math_moves_the_losses(measured, change):
    """What the tolerance must catch: each change moves some per-step loss by more than 10x RTOL. (The last one
    keeps the data per step the same but splits it: the per-token normalisation makes it equal only up to
    float order when it is right; this checks the test would see a wrong one.)"""
    other = _losses("fast", **change)
    base = measured["fast"]
    diffs = [abs(a - b) / abs(b) for a, b in zip(other["train"], base["train"], strict=False)]
    if "batch_size" in change:  # same sequences per step, other micro-batches: equal when normalised right
        assert max(diffs) < RTOL
    else:
        assert max(diffs) > 10 * RTOL, max(diffs)
