"""Every verdict rule, written once: the loss rule, the copy rule (copies, noise), the combined verdict, the ranking.

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

import math

import numpy as np

from harness.judge import typicality
from harness.judge.score import FORM_FLAGS, NEAR_COPY_SIMILARITY, length_weights, metric
from harness.results import (
    CopyAnalysis,
    CopyEvidence,
    LossAnalysis,
    RankTest,
    RepetitionEvidence,
    RuleCheck,
    Scores,
    TypicalityEvidence,
    VariantResult,
    Verdict,
)

# The judge's version: raised whenever a score, a rule or a threshold changes what a verdict can be. Results record
# it per variant; `asciitune compare` re-judges stored samples judged by another version (harness.judge.rejudge).
# 1: results written before versions were recorded. 2: typed rows, one entry point (harness.judge.judge.judge).
# 3: loops (harness.judge.repetition): a looping sample is not valid, a set that mostly loops is "looping".
JUDGE_VERSION = 3

# ---------------------------------------------------------------- how near a bound is borderline
# RuleCheck.band per check: BAND_SIGMAS x the standard deviation of the check's value across training/generation
# seeds. A value nearer its bound than that could fall on the other side under another seed. Measured: the default
# config at 5 seeds (3407-3411; run 20261207-033921-91cb8b, 2-core VM, judge version 3; the run behind
# reports/examples/gate-calibration.json, "seed_spread"), each sd taken from the variant whose values sit nearest
# the bound among those that vary:
#   held-out rise 0.035 and train fall after the minimum 0.030 (memorize); ratio growth 0.025 (learn, 1.28-1.34);
#   train drop 0.011 (learn); well-formed rate 0.163, noise rate 0.137, valid rate 0.084, loop rate 0.114 and the
#   repeated-line set test's effect 0.042 (memorize, whose best adapter's samples mostly run past max_new_tokens);
#   set test effect 0.011 (learn, 0.91-0.94: at the default sampler learn's samples are noise at every seed);
#   loop rate against novel's 10% 0.052 (learn); novelty and copied-line margins 0.016 and 0.039 (learn);
#   copy rates: no copies at any seed, no spread measured, so no band.
BAND_SIGMAS = 2.0
SEED_SD = {"heldout_rise": 0.035, "train_fall_after_min": 0.030, "ratio_growth": 0.025, "train_drop": 0.011,
           "well_formed_rate": 0.163, "noise_rate": 0.137, "set_noise": 0.011, "valid_rate": 0.084, "copy_rate": 0.0,
           "copy_rate_novel": 0.0, "noise_rate_novel": 0.137, "novelty": 0.016, "copied_lines": 0.039,
           "loop_rate": 0.114, "loop_rate_novel": 0.052, "set_loop": 0.042}
BANDS = {name: BAND_SIGMAS * sd for name, sd in SEED_SD.items()}

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
# Below half well-formed (empty, under 3 lines, prose, non-ASCII, control characters, cut off),
# the outputs mostly fail to be shaped like art at all: "invalid", whatever else they show.
MIN_WELL_FORMED_RATE = 0.5
# Half or more of all outputs well-formed but noise (atypical for the training art, or character
# entropy above 5 bits): the model draws noise, "noise". A set where fewer are flagged one by one
# is still noise when the set test below finds its typicality unlike the human reference's.
NOISE_RATE = 0.5
MIN_VALID_RATE = 0.5  # below half valid, the outputs are mostly failures and their novelty says nothing
MEMORIZING_COPY_RATE = 0.5  # half or more of the valid outputs are copies: the model mostly replays its data
# A generalizing model may still reproduce a few short, common pieces (a 3-line cat face can be
# drawn only so many ways), so 1 copy in 10 is tolerated before "novel" is refused.
NOVEL_MAX_COPY_RATE = 0.1
# Real pieces unseen in training (a sixth of the training groups held back, 20 draws) are flagged
# noise one by one at 7.3% in a run on cats (the 23-piece held-out reference is the limit), 1.3%
# scored externally (leave-one-group-out over 178 pieces, the reference of judge version 1) and 0.8-1.5% on
# pyfiglet banners. Sets of 20 such pieces went over 20% flagged in 4.8% of draws on cats in a run and never elsewhere;
# above it "novel" is refused (mixed): up to 1 in 5 noisy samples beside novel art is tolerated.
NOVEL_MAX_NOISE_RATE = 0.2
HUMAN_SIMILARITY_PERCENTILE = 95  # a copy must be closer to training than 95% of unseen human pieces
# The human copied-line share's upper limit is at least 1 - 0.025**(1/n) for n human pieces: when none
# of them shares a line with training the bootstrap interval is [0, 0], which claims a rate of exactly 0;
# a mean share m of values in [0, 1] leaves all n at 0 with probability <= (1 - m)**n, so this is the
# largest m that n zeros cannot rule out at 2.5% (0.17 for 20 pieces, 0.017 for 215). Evidence (default
# run's learn data, 48 training cats, 2026-12-01): its 20 held-out cats share no line ([0, 0]), while 97
# real cats it never saw (the training pool past its 48, other groups) share 2.8% of their lines (the ear
# lines "/\_/\" and "/\___/\", which several unrelated training cats have, and a few others), so as a
# set they were "mixed" by this rule alone, and 6 of 200 random sets of 8 of the short ones.
HUMAN_LINES_ALPHA = 0.025
# The set test: one-sided Mann-Whitney U of the well-formed samples against the well-formed human
# pieces on each typicality measure (cross-entropy, structure and vertical bits), Bonferroni over
# the three; the set is noise when one test has p < SET_ALPHA / 3 AND an effect (the probability
# that a sample is worse than a human piece) >= SET_MIN_EFFECT. Measured on the measure that
# separates best: every noise case (random symbols, random art characters, noise drawn from the
# training pieces' own characters, lines of different pieces shuffled together, prose) 0.95-1.00
# on cats and pyfiglet banners, in a run and external; real art of the other kind (banners against
# cats, cats against banners) 0.69-0.79; unseen held-out pieces 0.43-0.50; copies <= 0.15. 0.85
# sits in the gap; on 200 random sets of 10 or 30 unseen human pieces it never fired. Noise drawn
# from the training pieces' own characters overlaps the tail of real art one piece at a time,
# which is why the set is judged as well as each piece.
SET_ALPHA = 0.01
SET_MIN_EFFECT = 0.85
# Loops (harness.judge.repetition; the per-sample limit is typicality.REPEAT_MARGIN above the human 99th percentile).
# Half or more of all samples loop: the model writes lines again and again, "looping", whatever else they show.
LOOP_RATE = 0.5
# Human pieces are flagged looping at 0% on banners and formulas and at most 0.5% on cats (the limit sits above the
# 99th percentile by a margin), so one looping sample in ten is already far more than human art of the kind does;
# above it "novel" is refused (mixed).
NOVEL_MAX_LOOP_RATE = 0.1
# The set test for repetition: one-sided Mann-Whitney U of the samples' repeated_line_share against the human
# pieces' (samples repeat more), p < SET_ALPHA and effect >= SET_LOOP_EFFECT refuses "novel". Most human pieces
# repeat nothing, so a set whose samples each stutter once, under the per-sample limit, shows here. Measured
# (tests/art_kinds.py, 2026-12-07): 200 random sets of 16 human pieces against all of their kind 0.46-0.62 (cats),
# 0.50 (banners, formulas); 50 such sets with one line of each piece doubled 0.95-0.98 (cats), 1.00 (the others);
# loops made from held-out pieces 0.99-1.00; the default run's learn samples of judge version 2 0.93, its memorize
# samples 0.87, the export-quality example's formats 0.78-0.90.
SET_LOOP_EFFECT = 0.75
COPY_RULE = (f"invalid if < {MIN_WELL_FORMED_RATE:.0%} of samples are well-formed (no failure but noise or looping); "
             f"memorizing if >= {MEMORIZING_COPY_RATE:.0%} of the well-formed samples are copies (a copy is training "
             f"art, never noise); looping if >= {LOOP_RATE:.0%} of samples loop (more of their lines repeat the block "
             "right above them, or more of their characters repeat one short unit, than the human reference's 99th "
             f"percentile plus a margin); noise if >= {NOISE_RATE:.0%} of samples are well-formed noise (atypical for "
             "the training art, or character entropy > 5 bits) or the well-formed samples that are not copies "
             "differ from the human reference in typicality as a set "
             f"(one-sided Mann-Whitney U, p < {SET_ALPHA}/3 and effect >= {SET_MIN_EFFECT} on cross-entropy, "
             f"structure or vertical bits); invalid if valid_rate < {MIN_VALID_RATE}; memorizing if >= "
             f"{MEMORIZING_COPY_RATE:.0%} of valid samples are copies (exact, or similarity to the nearest training "
             "piece, or to the first lines of one as many as the sample has, >= "
             f"max({NEAR_COPY_SIMILARITY}, human p{HUMAN_SIMILARITY_PERCENTILE})); novel if <= "
             f"{NOVEL_MAX_COPY_RATE:.0%} are copies, <= {NOVEL_MAX_NOISE_RATE:.0%} of samples are noise, <= "
             f"{NOVEL_MAX_LOOP_RATE:.0%} loop, the samples do not repeat lines more than human pieces as a set "
             f"(one-sided Mann-Whitney U, p < {SET_ALPHA} and effect >= {SET_LOOP_EFFECT}), and valid "
             "samples' novelty and copied-line share are within the human reference's 95% intervals (the copied-line "
             "share's upper limit at least 1 - 0.025^(1/n) for n human pieces); mixed otherwise")
# Memorizing comes first: a held-out loss that turned up while the train loss kept falling is evidence of
# memorization whatever the samples look like (a small model that memorizes often still writes broken art);
# below it, samples that are not art (invalid, noise) overrule a loss curve that says learning.
COMBINED_RULE = ("memorizing if either verdict is memorizing; else invalid, looping or noise if the copy verdict is "
                 "(whatever the loss curves say: the samples are not art); mixed if the loss says "
                 "learning but the copy verdict is mixed; otherwise the loss verdict")

# ---------------------------------------------------------------- the ranking
QUALITY_METRICS = ("valid_rate", "width_consistency", "novelty")
TOP_TIER = ("learning", "novel")
MIDDLE_TIER = ("mixed", "undertrained")
BOTTOM_TIER = ("memorizing", "invalid", "looping", "noise")
# How reports colour a verdict word: the tiers above, plus "failed" (a variant that did not finish) as bad.
TONES = {"good": TOP_TIER, "mid": MIDDLE_TIER, "bad": (*BOTTOM_TIER, "failed")}
# A sample's failure flags, in the order reports name them (score.FORM_FLAGS plus noise and looping).
SAMPLE_FLAGS = ("empty", "too_few_lines", "non_printable", "non_ascii", "prose", "noise", "looping", "cut_off")
RANKING_RULE = (
    "Ranking: variants are first put in tiers by their final memorization verdict - (1) learning or novel, "
    "(2) mixed (some copying, noise or loops) or undertrained, (3) memorizing, looping (samples that write lines "
    "again and again), noise (samples unlike the training art) or invalid (under half the samples valid) - (4) "
    "failed or unscored - and within a tier sorted by quality = "
    "valid_rate x width_consistency x novelty (each 0-1, higher is better; the last two over valid samples), ties "
    "going to the lower final held-out loss. The product means a variant that copies its training pieces (novelty "
    "near 0) or draws broken art (low validity or uneven line widths) cannot rank high on the strength of the "
    "others.")


def check(name: str, value: float, bound: float, bad_when_high: bool, band: float, label: str = "") -> RuleCheck:
    """One bound of a rule and the value measured against it."""
    fired = value >= bound if bad_when_high else value < bound
    text = f"{label or name.replace('_', ' ')} {value:.3g} against {bound:g}"
    return RuleCheck(name, float(value), float(bound), bad_when_high, bool(fired), float(band), False, text)


def mark_borderline(checks: list[RuleCheck], decide) -> list[str]:
    """Mark the checks within their band of the bound whose other outcome alone gives another verdict; their texts.

    decide: {check name: fired} -> verdict, the rule itself.
    """
    fired = {c.name: c.fired for c in checks}
    verdict = decide(fired)
    for c in checks:
        if abs(c.value - c.bound) < c.band and decide({**fired, c.name: not c.fired}) != verdict:
            c.borderline = True
    return [c.text for c in checks if c.borderline]


def loss_rule(fired: dict[str, bool]) -> str:
    """The loss rule on its checks' outcomes (LOSS_RULE)."""
    if (fired["heldout_rise"] and fired["train_fall_after_min"]) or fired["ratio_growth"]:
        return "memorizing"
    return "undertrained" if fired["train_drop"] else "learning"


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
    rise = heldout[-1] / h_min - 1 if h_min > 0 else 0.0
    checks = [check("heldout_rise", rise, RISE, True, BANDS["heldout_rise"], "held-out rise above its minimum"),
              check("train_fall_after_min", 1 - train[-1] / train[i_min] if train[i_min] > 0 else 0.0, RISE, True,
                    BANDS["train_fall_after_min"], "train fall after the held-out minimum"),
              check("ratio_growth", ratio / ratio0 if ratio0 > 0 and math.isfinite(ratio0) else 0.0, RATIO_GROWTH,
                    True, BANDS["ratio_growth"], "held-out/train ratio growth"),
              check("train_drop", drop, MIN_DROP, False, BANDS["train_drop"], "train loss drop")]
    verdict = loss_rule({c.name: c.fired for c in checks})
    mark_borderline(checks, loss_rule)
    if verdict == "memorizing" and onset is None:
        onset = steps[i_min]
    return LossAnalysis(verdict, LOSS_RULE, h_min, steps[i_min], train[-1], heldout[-1], heldout[-1] - train[-1],
                        ratio, ratio0, drop, onset, checks)


def well_formed(row: dict) -> bool:
    """A per-sample row with no failure flag but noise (score.FORM_FLAGS)."""
    return bool(row.get("well_formed", not any(row.get(f) for f in FORM_FLAGS)))


def copy_similarity(row: dict) -> float:
    """What the copy rule compares: the larger of the whole-piece and the head similarity (score.COPY_HEADS)."""
    return max(row["similarity"], row.get("head_similarity") or 0.0)


def set_test_samples(per_sample: list[dict]) -> list[dict]:
    """The samples a set test reads: the well-formed ones that are not copies. Copies (exact, or >= 0.85 to a
    training piece or its head) are training art: a set test asks whether the rest looks like it too, so a copy
    machine is judged by its copies (memorizing), not as noise or loops."""
    return [s for s in per_sample if well_formed(s) and not (s["exact_copy"] or s["near_copy"])]


def typicality_evidence(per_sample: list[dict], human_rows: list[dict]) -> TypicalityEvidence | None:
    """The samples' typicality against the human reference's, one by one and as a set; None if either lacks it."""
    if not per_sample or "cross_entropy_bits" not in per_sample[0]:
        return None
    limits = typicality.limits_from_rows(human_rows)
    if limits is None:
        return None
    samples = set_test_samples(per_sample)
    human = [r for r in human_rows if well_formed(r) and "cross_entropy_bits" in r]
    tests = []
    for t in typicality.rank_tests(samples, human):
        flagged = t["p_value"] is not None and t["p_value"] < SET_ALPHA / len(typicality.MEASURES) \
            and t["effect"] >= SET_MIN_EFFECT
        tests.append(RankTest(**{k: t[k] for k in ("measure", "direction", "statistic", "effect", "p_value",
                                                     "n_samples", "n_human", "median_samples", "median_human")},
                              flagged=flagged))
    noise = sum(well_formed(s) and bool(s["noise"]) for s in per_sample) / len(per_sample)
    return TypicalityEvidence(
        noise_rate=noise, typical_rate=metric([float(not s["atypical"]) for s in samples], True),
        human_typical_rate=metric([float(not r["atypical"]) for r in human], True),
        cross_entropy_bits=metric([s["cross_entropy_bits"] for s in samples], False),
        human_cross_entropy_bits=metric([r["cross_entropy_bits"] for r in human], False),
        set_noise=any(t.flagged for t in tests), tests=tests,
        thresholds={k: float(v) for k, v in limits.items() if k != "values"})


def repetition_evidence(per_sample: list[dict], human_rows: list[dict]) -> RepetitionEvidence | None:
    """The samples' loops against the human reference's, one by one and as a set; None if either lacks the measure."""
    key = "repeated_line_share"
    human = [r for r in human_rows if isinstance(r.get(key), (int, float))]
    if not per_sample or not human or not all(isinstance(s.get(key), (int, float)) for s in per_sample):
        return None
    limits = typicality.limits_from_rows(human_rows)
    if limits is None:
        return None
    # The set test reads what the typicality set test reads; the per-sample rate reads every sample, as noise does,
    # since a loop that never ends is cut off.
    samples = set_test_samples(per_sample)
    t = typicality.rank_test([s[key] for s in samples], [r[key] for r in human], "greater")
    flagged = t["p_value"] is not None and t["p_value"] < SET_ALPHA and t["effect"] >= SET_LOOP_EFFECT
    test = RankTest(measure=key, direction="greater", flagged=flagged,
                    median_samples=float(np.median([s[key] for s in samples])) if samples else None,
                    median_human=float(np.median([r[key] for r in human])),
                    **{k: t[k] for k in ("statistic", "effect", "p_value", "n_samples", "n_human")})
    return RepetitionEvidence(
        loop_rate=sum(bool(s.get("looping")) for s in per_sample) / len(per_sample),
        human_loop_rate=sum(bool(r.get("looping")) for r in human) / len(human),
        limits={k: float(limits[f"max_{k}"]) for k in typicality.REPEAT_KEYS},
        repeated_line_share=metric([s[key] for s in samples], False),
        human_repeated_line_share=metric([r[key] for r in human], False), test=test, set_loop=flagged)


def copy_threshold(human_rows: list[dict]) -> float:
    """The copy similarity at or above which a sample is a copy: max(0.85, the human pieces' 95th percentile)."""
    sims = [copy_similarity(s) for s in human_rows]
    return max(NEAR_COPY_SIMILARITY, float(np.percentile(sims, HUMAN_SIMILARITY_PERCENTILE)) if sims else 0.0)


def is_copy(row: dict, threshold: float) -> bool:
    """Whether a scored sample is a copy: exact, or its copy similarity at least the threshold (copy_threshold)."""
    return bool(row["exact_copy"]) or copy_similarity(row) >= threshold


def copy_rule(fired: dict[str, bool]) -> str:
    """The copy rule on its checks' outcomes (COPY_RULE)."""
    if fired["well_formed_rate"]:
        return "invalid"
    if fired["copy_share_formed"]:
        return "memorizing"
    if fired.get("loop_rate"):  # .get: results judged before version 3 stored no loop checks
        return "looping"
    if fired["noise_rate"] or fired["set_noise"]:
        return "noise"
    if fired["valid_rate"]:
        return "invalid"
    if fired["copy_rate"]:
        return "memorizing"
    if not (fired["copy_rate_novel"] or fired["noise_rate_novel"] or fired.get("loop_rate_novel")
            or fired.get("set_loop") or fired["novelty"] or fired["copied_lines"]):
        return "novel"
    return "mixed"


def copy_verdict(per_sample: list[dict], human: Scores) -> CopyAnalysis:
    """Copy-evidence verdict of scored samples (score_pieces' per-sample rows) against the human reference.

    A sample is a copy if it is an exact copy, or its copy similarity (score.copy_similarity: to the
    nearest training piece or to the first lines of one) is at least max(0.85, the 95th percentile
    of the held-out human pieces' copy similarity).
    See COPY_RULE for the verdicts. Each bound is kept as a check, with its band (BANDS).
    """
    per, hper = per_sample, human.per_sample
    if not per:
        raise ValueError("no samples to judge")
    threshold = copy_threshold(hper)
    valid, hvalid = [s for s in per if s["valid"]], [s for s in hper if s["valid"]]
    copy_rate = sum(is_copy(s, threshold) for s in valid) / len(valid) if valid else 0.0
    formed = [s for s in per if well_formed(s)]
    copy_share = sum(is_copy(s, threshold) for s in formed) / len(formed) if formed else 0.0
    valid_rate, formed_rate = len(valid) / len(per), sum(map(well_formed, per)) / len(per)
    typ = typicality_evidence(per, hper)
    noise_rate = typ.noise_rate if typ else sum(well_formed(s) and bool(s["noise"]) for s in per) / len(per)
    # the human side reweighted to the samples' lengths where both carry them (rows stored before did not)
    w = length_weights([s["chars"] for s in hvalid], [s["chars"] for s in valid]) \
        if all("chars" in s for s in (*valid, *hvalid)) else None
    nov, h_nov = metric([s["novelty"] for s in valid], True), metric([s["novelty"] for s in hvalid], True, w)
    lines = metric([s["copied_line_share"] for s in valid], False)
    h_lines = metric([s["copied_line_share"] for s in hvalid], False, w)
    both = bool(valid) and bool(hvalid)  # with either side empty there is nothing to compare
    lines_limit = max(h_lines.ci_high or 0.0, 1 - HUMAN_LINES_ALPHA ** (1 / max(h_lines.n, 1)))
    effects = [t.effect for t in typ.tests if t.effect is not None] if typ else []
    effect = max(effects, default=0.0)
    rep = repetition_evidence(per, hper)
    checks = [check("well_formed_rate", formed_rate, MIN_WELL_FORMED_RATE, False, BANDS["well_formed_rate"]),
              check("copy_share_formed", copy_share, MEMORIZING_COPY_RATE, True, BANDS["copy_rate"],
                    "copies among well-formed samples"),
              *([check("loop_rate", rep.loop_rate, LOOP_RATE, True, BANDS["loop_rate"])] if rep else []),
              check("noise_rate", noise_rate, NOISE_RATE, True, BANDS["noise_rate"]),
              check("set_noise", effect, SET_MIN_EFFECT, True, BANDS["set_noise"], "set test effect"),
              check("valid_rate", valid_rate, MIN_VALID_RATE, False, BANDS["valid_rate"]),
              check("copy_rate", copy_rate, MEMORIZING_COPY_RATE, True, BANDS["copy_rate"]),
              # novel needs copy_rate <= 10% and noise_rate <= 20%: these checks fire when novel is refused
              check("copy_rate_novel", copy_rate, NOVEL_MAX_COPY_RATE, True, BANDS["copy_rate_novel"],
                    "copy rate (novel at most)"),
              check("noise_rate_novel", noise_rate, NOVEL_MAX_NOISE_RATE, True, BANDS["noise_rate_novel"],
                    "noise rate (novel at most)"),
              *([check("loop_rate_novel", rep.loop_rate, NOVEL_MAX_LOOP_RATE, True, BANDS["loop_rate_novel"],
                       "loop rate (novel at most)"),
                 check("set_loop", rep.test.effect or 0.0, SET_LOOP_EFFECT, True, BANDS["set_loop"],
                       "repeated-line set test effect")] if rep else []),
              check("novelty", (nov.ci_high - h_nov.ci_low) if both else -1.0, 0.0, False, BANDS["novelty"],
                    "novelty interval's top minus the human interval's bottom"),
              check("copied_lines", (lines_limit - lines.ci_low) if both else -1.0, 0.0, False, BANDS["copied_lines"],
                    "human copied-line limit minus the samples' interval bottom")]
    # the two rules above are strict inequalities in COPY_RULE (> 10%, > 20% refuse novel); a check fires at >=
    by = {c.name: c for c in checks}
    for name in ("copy_rate_novel", "noise_rate_novel", "loop_rate_novel"):
        if name in by:
            by[name].fired = by[name].value > by[name].bound
    by["set_noise"].fired = bool(typ is not None and typ.set_noise)  # the set test needs its p-value too (flagged)
    if rep is not None:
        by["set_loop"].fired = rep.set_loop
    verdict = copy_rule({c.name: c.fired for c in checks})
    mark_borderline(checks, copy_rule)
    evidence = CopyEvidence(valid_rate, copy_rate, threshold, nov, h_nov, lines, h_lines, not by["novelty"].fired,
                            not by["copied_lines"].fired, w is not None, formed_rate, typ, rep, checks)
    return CopyAnalysis(verdict, COPY_RULE, evidence)


def combined(loss_verdict: str, copy_verdict: str) -> str:
    """COMBINED_RULE on the two verdicts."""
    if "memorizing" in (loss_verdict, copy_verdict):
        return "memorizing"
    if copy_verdict in ("invalid", "looping", "noise"):
        return copy_verdict
    if copy_verdict == "mixed" and loss_verdict == "learning":
        return "mixed"
    return loss_verdict


def combine_verdicts(loss: LossAnalysis | str, copy: CopyAnalysis | None) -> Verdict:
    """Final memorization verdict from the loss-curve verdict and the copy verdict (COMBINED_RULE); without a copy
    verdict (no human pieces to judge samples against) the loss verdict alone.

    Verdict.borderline names the checks of either rule that sat within their band of a bound where the other
    outcome of that one check would have changed the final verdict.
    """
    loss_verdict = loss if isinstance(loss, str) else loss.verdict
    if loss_verdict not in LOSS_VERDICTS:
        raise ValueError(f"loss verdict must be one of {LOSS_VERDICTS}, not {loss_verdict!r}")
    loss_checks = [] if isinstance(loss, str) else loss.checks
    copy_checks = copy.evidence.checks if copy is not None else []
    lf = {c.name: c.fired for c in loss_checks}
    cf = {c.name: c.fired for c in copy_checks}

    def final(lf: dict[str, bool], cf: dict[str, bool]) -> str:
        lv = loss_rule(lf) if lf else loss_verdict
        cv = (copy_rule(cf) if cf else copy.verdict) if copy is not None else ""
        return combined(lv, cv) if copy is not None else lv

    verdict = final(lf, cf)
    near = [c.text for c in loss_checks if abs(c.value - c.bound) < c.band
            and final({**lf, c.name: not c.fired}, cf) != verdict]
    near += [c.text for c in copy_checks if abs(c.value - c.bound) < c.band
             and final(lf, {**cf, c.name: not c.fired}) != verdict]
    return Verdict(verdict, COMBINED_RULE, loss_verdict, copy.verdict if copy is not None else "", near)


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
    """valid_rate x width_consistency x novelty, or None when one is missing (0 when no sample is valid)."""
    if metric_value(v.scores, "valid_rate") == 0:
        return 0.0  # width and novelty are over valid samples, so absent here, but the product is 0 anyway
    product = 1.0
    for name in QUALITY_METRICS:
        value = metric_value(v.scores, name)
        if value is None:
            return None
        product *= value
    return product


def tone(text: str) -> str:
    """A verdict's colour class ("good", "mid", "bad"), from its first word ("learning 4/5" is good); else ""."""
    words = (text or "").strip().lower().split()
    return next((t for t, tier_words in TONES.items() if words and words[0] in tier_words), "")


def verdict_tier(word: str) -> int | None:
    """0 learning/novel, 1 mixed/undertrained, 2 memorizing/noise/invalid, 3 failed; None for anything else."""
    word = (word or "").lower()
    for i, words in enumerate((TOP_TIER, MIDDLE_TIER, BOTTOM_TIER, ("failed",))):
        if word in words:
            return i
    return None


def got_worse(before: str, after: str) -> bool:
    """Whether a verdict moved to a worse tier (novel -> mixed, learning -> noise, ... -> failed)."""
    a, b = verdict_tier(before), verdict_tier(after)
    return a is not None and b is not None and b > a


def tier(v: VariantResult) -> int:
    """0 learning/novel, 1 mixed/undertrained, 2 memorizing/noise/invalid, 3 failed or unscored (RANKING_RULE)."""
    if v.status == "failed" or quality(v) is None:
        return 3
    return min(verdict_tier(final_verdict(v)) or 0, 2)


def rank(variants: list[VariantResult]) -> list[VariantResult]:
    """Variants in leaderboard order (RANKING_RULE)."""
    def key(v: VariantResult) -> tuple:
        loss = v.loss_analysis.final_heldout_loss if v.loss_analysis else float("inf")
        return tier(v), -(quality(v) or 0.0), loss, v.name
    return sorted(variants, key=key)
