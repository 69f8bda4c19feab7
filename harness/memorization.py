"""Loss-based memorization analysis of one variant's train vs held-out curves (pure, no torch).

Both curves are measured in eval mode on fixed probes (a slice of the training pieces and
the held-out pieces) at the same steps, step 0 included. The rule:

* **memorizing** if the held-out loss turned up while the train loss kept falling: the final
  held-out loss is at least ``RISE`` (5%) above its minimum and the train loss fell by at
  least ``RISE`` more after that minimum; or if the held-out/train ratio grew to at least
  ``RATIO_GROWTH`` (1.5x) its value at step 0 (the model fits the training pieces far better
  than pieces it never saw, relative to where it started).
* **undertrained** if not memorizing and the train loss fell less than ``MIN_DROP`` (10%)
  from step 0: the adapter has barely moved, so neither curve says much yet.
* **learning** otherwise: both losses fell, and held-out loss has not turned up.

5% is well above the probe noise of a fixed-probe eval-mode loss (deterministic: the same
weights give the same number), yet small next to the rises seen when a small model is
trained for many epochs on a handful of pieces (held-out loss typically climbs by 20-100%).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

RISE = 0.05
RATIO_GROWTH = 1.5
MIN_DROP = 0.10
RULE = ("memorizing if held-out loss ended >=5% above its minimum while train loss fell >=5% further after it, "
        "or if the held-out/train loss ratio grew >=1.5x from step 0; undertrained if train loss fell <10% "
        "from step 0; learning otherwise")


@dataclass(frozen=True)
class LossAnalysis:
    """The numbers behind a loss-based verdict."""

    verdict: str
    rule: str
    heldout_min: float
    heldout_min_step: int
    final_train_loss: float
    final_heldout_loss: float
    final_gap: float  # held-out minus train, at the last point
    final_ratio: float  # held-out over train, at the last point
    initial_ratio: float
    train_drop: float  # relative fall of train loss from step 0
    onset_step: int | None  # first step held-out loss is RISE above its running minimum while train keeps falling

    def to_dict(self) -> dict:
        """Plain dict for results.json."""
        return asdict(self)


def analyse(steps: list[int], train: list[float], heldout: list[float]) -> LossAnalysis:
    """Apply the documented rule to two loss curves measured at the same steps."""
    if not (len(steps) == len(train) == len(heldout)) or len(steps) < 2:
        raise ValueError("need at least two points, with both losses measured at every step")
    i_min = min(range(len(heldout)), key=heldout.__getitem__)
    h_min = heldout[i_min]
    onset = None
    running_min, at = heldout[0], 0
    for i in range(1, len(steps)):
        if heldout[i] < running_min:
            running_min, at = heldout[i], i
        elif heldout[i] >= running_min * (1 + RISE) and train[i] <= train[at] * (1 - RISE):
            onset = steps[at]
            break
    ratio0 = heldout[0] / train[0] if train[0] > 0 else float("inf")
    ratio = heldout[-1] / train[-1] if train[-1] > 0 else float("inf")
    drop = (train[0] - train[-1]) / train[0] if train[0] > 0 else 0.0
    turned_up = heldout[-1] >= h_min * (1 + RISE) and train[-1] <= train[i_min] * (1 - RISE)
    if turned_up or ratio >= ratio0 * RATIO_GROWTH:
        verdict = "memorizing"
        if onset is None:
            onset = steps[i_min]
    elif drop < MIN_DROP:
        verdict = "undertrained"
    else:
        verdict = "learning"
    return LossAnalysis(verdict, RULE, h_min, steps[i_min], train[-1], heldout[-1], heldout[-1] - train[-1],
                        ratio, ratio0, drop, onset)
