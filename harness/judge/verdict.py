"""Every verdict rule, each written once: the loss rule, the copy rule, the combined verdict, the ranking.

Pure (no torch). Reports, the run summary, plots and `compare` ask this module; none of them
re-derives a verdict.

**Loss rule** (train vs held-out curves, both measured in eval mode on fixed probes at the same
steps, step 0 included):

* **memorizing** if the held-out loss turned up while the train loss kept falling: the final
  held-out loss is at least ``RISE`` (5%) above its minimum and the train loss fell by at
  least ``RISE`` more after that minimum; or if the held-out/train ratio grew to at least
  ``RATIO_GROWTH`` (1.5x) its value at step 0.
* **undertrained** if not memorizing and the train loss fell less than ``MIN_DROP`` (10%)
  from step 0: the adapter has barely moved, so neither curve says much yet.
* **learning** otherwise: both losses fell, and held-out loss has not turned up.

5% is well above the probe noise of a fixed-probe eval-mode loss (deterministic: the same
weights give the same number), yet small next to the rises seen when a small model is
trained for many epochs on a handful of pieces (held-out loss typically climbs by 20-100%).
"""
from __future__ import annotations

import numpy as np

from harness.judge.score import NEAR_COPY_SIMILARITY, metric
from harness.results import CopyAnalysis, CopyEvidence, LossAnalysis, Scores, VariantResult, Verdict

# ---------------------------------------------------------------- the loss rule
RISE = 0.05
RATIO_GROWTH = 1.5
MIN_DROP = 0.10
LOSS_VERDICTS = ("learning", "memorizing", "undertrained")
LOSS_RULE = ("memorizing if held-out loss ended >=5% above its minimum while train loss fell >=5% further after it, "
             "or if the held-out/train loss ratio grew >=1.5x from step 0; undertrained if train loss fell <10% "
             "from step 0; learning otherwise")

# ---------------------------------------------------------------- the copy rule
# Thresholds chosen from what the verdicts mean, not fitted to any run:
MIN_VALID_RATE = 0.5  # below half valid, the outputs are mostly failures and their novelty says nothing
MEMORIZING_COPY_RATE = 0.5  # half or more of all outputs are copies: the model mostly replays its data
# A generalizing model may still reproduce a few short, common pieces (a 3-line cat face can be
# drawn only so many ways), so 1 copy in 10 is tolerated before "novel" is refused.
NOVEL_MAX_COPY_RATE = 0.1
HUMAN_SIMILARITY_PERCENTILE = 95  # a copy must be closer to training than 95% of unseen human pieces
COPY_RULE = (f"invalid if valid_rate < {MIN_VALID_RATE}; memorizing if >= {MEMORIZING_COPY_RATE:.0%} of samples "
             f"are copies (exact, or nearest-training similarity >= max({NEAR_COPY_SIMILARITY}, human held-out "
             f"p{HUMAN_SIMILARITY_PERCENTILE})); novel if <= {NOVEL_MAX_COPY_RATE:.0%} are copies and valid samples' "
             "novelty and copied-line share are within the human reference's 95% intervals; mixed otherwise")
COMBINED_RULE = ("invalid if the copy verdict is invalid; memorizing if either verdict is memorizing; mixed if the "
                 "loss says learning but the copy verdict is mixed; otherwise the loss verdict")

# ---------------------------------------------------------------- the ranking
QUALITY_METRICS = ("valid_rate", "width_consistency", "novelty")
TOP_TIER = ("learning", "novel")
MIDDLE_TIER = ("mixed", "undertrained")
BOTTOM_TIER = ("memorizing", "invalid")
RANKING_RULE = (
    "Ranking: variants are first put in tiers by their final memorization verdict - (1) learning or novel, "
    "(2) mixed (some copying) or undertrained, (3) memorizing or invalid (under half the samples valid), "
    "(4) failed or unscored - and within a tier sorted by quality = valid_rate x width_consistency x novelty "
    "(each 0-1, higher is better), ties going to the lower final held-out loss. The product means a variant "
    "that copies its training pieces (novelty near 0) or draws broken art (low validity or uneven line widths) "
    "cannot rank high on the strength of the others.")


def analyse(steps: list[int], train: list[float], heldout: list[float]) -> LossAnalysis:
    """Apply the loss rule to two loss curves measured at the same steps."""
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
    return LossAnalysis(verdict, LOSS_RULE, h_min, steps[i_min], train[-1], heldout[-1], heldout[-1] - train[-1],
                        ratio, ratio0, drop, onset)


def copy_verdict(per_sample: list[dict], human: Scores) -> CopyAnalysis:
    """Copy-evidence verdict of scored samples (score_pieces' per-sample rows) against the human reference.

    A sample is a copy if it is an exact copy, or its nearest-training similarity is at least
    max(0.85, the 95th percentile of the held-out human pieces' nearest-training similarity).
    See COPY_RULE for the verdicts.
    """
    per, hper = per_sample, human.per_sample
    if not per:
        raise ValueError("no samples to judge")
    human_sims = [s["similarity"] for s in hper]
    threshold = max(NEAR_COPY_SIMILARITY,
                    float(np.percentile(human_sims, HUMAN_SIMILARITY_PERCENTILE)) if human_sims else 0.0)
    copy_rate = sum(s["exact_copy"] or s["similarity"] >= threshold for s in per) / len(per)
    valid, hvalid = [s for s in per if s["valid"]], [s for s in hper if s["valid"]]
    valid_rate = len(valid) / len(per)
    nov, h_nov = (metric([s["novelty"] for s in v], True) for v in (valid, hvalid))
    lines, h_lines = (metric([s["copied_line_share"] for s in v], False) for v in (valid, hvalid))
    both = bool(valid) and bool(hvalid)  # with either side empty there is nothing to compare
    novelty_ok = both and nov.ci_high >= h_nov.ci_low
    lines_ok = both and lines.ci_low <= h_lines.ci_high
    if valid_rate < MIN_VALID_RATE:
        verdict = "invalid"
    elif copy_rate >= MEMORIZING_COPY_RATE:
        verdict = "memorizing"
    elif copy_rate <= NOVEL_MAX_COPY_RATE and novelty_ok and lines_ok:
        verdict = "novel"
    else:
        verdict = "mixed"
    evidence = CopyEvidence(valid_rate, copy_rate, threshold, nov, h_nov, lines, h_lines, novelty_ok, lines_ok)
    return CopyAnalysis(verdict, COPY_RULE, evidence)


def combine_verdicts(loss_verdict: str, copy: CopyAnalysis) -> Verdict:
    """Final memorization verdict from the loss-curve verdict and the copy verdict (COMBINED_RULE)."""
    if loss_verdict not in LOSS_VERDICTS:
        raise ValueError(f"loss verdict must be one of {LOSS_VERDICTS}, not {loss_verdict!r}")
    c = copy.verdict
    if c == "invalid":
        verdict = "invalid"
    elif "memorizing" in (loss_verdict, c):
        verdict = "memorizing"
    elif c == "mixed" and loss_verdict == "learning":
        verdict = "mixed"
    else:
        verdict = loss_verdict
    return Verdict(verdict, COMBINED_RULE, loss_verdict, c)


def final_verdict(v: VariantResult) -> str:
    """The combined verdict, else the loss verdict (a variant judged before sampling), else the status."""
    if v.status == "failed":
        return "failed"
    if v.verdict and v.verdict.verdict:
        return v.verdict.verdict
    if v.loss_analysis:
        return v.loss_analysis.verdict
    return v.status or "unknown"


def metric_value(scores: Scores | None, name: str) -> float | None:
    """A metric's value from a scores block, or None."""
    return scores.value(name) if scores else None


def quality(v: VariantResult) -> float | None:
    """valid_rate x width_consistency x novelty, or None when one is missing."""
    product = 1.0
    for name in QUALITY_METRICS:
        value = metric_value(v.scores, name)
        if value is None:
            return None
        product *= value
    return product


def tier(v: VariantResult) -> int:
    """0 learning/novel, 1 mixed/undertrained, 2 memorizing/invalid, 3 failed or unscored (see RANKING_RULE)."""
    verdict = final_verdict(v).lower()
    if v.status == "failed" or quality(v) is None:
        return 3
    return 2 if verdict in BOTTOM_TIER else 1 if verdict in MIDDLE_TIER else 0


def rank(variants: list[VariantResult]) -> list[VariantResult]:
    """Variants in leaderboard order (RANKING_RULE)."""
    def key(v: VariantResult) -> tuple:
        loss = v.loss_analysis.final_heldout_loss if v.loss_analysis else float("inf")
        return tier(v), -(quality(v) or 0.0), loss, v.name
    return sorted(variants, key=key)
