"""The loss-based verdict rule on hand-made curves (the rule is in harness/judge/verdict.py)."""
from harness.judge.verdict import analyse


def test_heldout_turning_up_while_train_falls_is_memorizing():
    steps = [0, 10, 20, 30, 40]
    a = analyse(steps, [3.0, 2.0, 1.2, 0.6, 0.2], [3.1, 2.6, 2.5, 2.8, 3.3])
    assert a.verdict == "memorizing"
    assert a.heldout_min_step == 20 and a.onset_step == 20
    assert a.final_ratio > a.initial_ratio


def test_both_falling_is_learning():
    a = analyse([0, 10, 20], [3.0, 2.5, 2.2], [3.1, 2.7, 2.4])
    assert a.verdict == "learning" and a.onset_step is None


def test_barely_moving_is_undertrained():
    a = analyse([0, 1, 2], [3.0, 2.98, 2.95], [3.1, 3.09, 3.07])
    assert a.verdict == "undertrained"


def test_gap_growth_alone_is_memorizing():
    # Held-out never rises, but train loss collapses: ratio grows from ~1 to 4.
    a = analyse([0, 10, 20], [3.0, 1.0, 0.5], [3.0, 2.2, 2.0])
    assert a.verdict == "memorizing"
