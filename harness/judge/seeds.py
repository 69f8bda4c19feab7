"""A variant over several seeds: its verdicts as a distribution and each metric's spread across seeds.

    asciitune run --seeds 5          # each variant 5 times: NAME, NAME@s1 ... NAME@s4 (config.replicate)
    run.seeds["learn"].verdict, run.seeds["learn"].agreement     # "learning", "4/5"

One run is one draw of the training data order and of the sampler; a verdict read from it is a
measurement with noise. Replicates of a variant differ only in train.seed and generate.seed, so their
spread is that noise, and `asciitune compare` weighs changes against it (harness.report.compare). Pure.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from harness.judge.verdict import final_verdict, verdict_tier
from harness.results import Metric, SeedSummary, Spread, VariantResult

# ---------------------------------------------------------------- the stated model of seed-to-seed variation
# For a variant run once, `compare` cannot see its seed spread, so it uses this model of it: a metric read from one
# seed moves between seeds by TAU beyond its own sampling stderr (which the metric carries); for numbers stored
# without a stderr (losses), by TAU_RELATIVE of their value. A difference of two single-seed runs then has
# variance se_a^2 + se_b^2 + tau_a^2 + tau_b^2. Measured on the default config at 6 seeds
# (run 20261202-192109-066ff7, 2-core VM): tau^2 = the replicates' variance minus their mean stderr^2, the
# largest over its variants (seed, learn, memorize), not their pool, which would understate the widest one (valid
# rate: memorize 0.110, learn 0).
# A metric whose spread its stderr explains in every variant (cross-entropy, copied-line share) gets 0; copy rates
# had no copies at any seed to measure.
TAU: dict[str, float] = {"valid_rate": 0.110, "novelty": 0.022, "width_consistency": 0.051, "typical_rate": 0.281,
                         "cut_off_rate": 0.141, "mean_pairwise_distance": 0.038, "distinct_ngrams": 0.136,
                         "cross_entropy_bits": 0.0, "copied_line_share": 0.0,
                         # measured later, judge version 3 (5 seeds, run 20261207-033921-91cb8b): memorize's spread
                         "loop_rate": 0.044}
# the final held-out loss: the widest variant's relative spread (memorize 2.7%; learn 0.55%, seed 0.03%)
TAU_RELATIVE: dict[str, float] = {"final_heldout_loss": 0.027}
# Two sides spread over seeds: a verdict shift counts when a one-sided Fisher exact test of the replicates in the
# worse tier puts it below this chance.
VERDICT_ALPHA = 0.1


def tau(metric: str, m: Metric | None) -> float | None:
    """A single-seed metric's seed-to-seed standard deviation beyond its stderr (the model above); None: unknown."""
    if m is None or m.value is None:
        return None
    if metric in TAU:
        return TAU[metric]
    if metric in TAU_RELATIVE:
        return TAU_RELATIVE[metric] * abs(m.value)
    return None


def seed_sd(metric: str, single_a: Metric | None, single_b: Metric | None) -> float | None:
    """The seed term of a difference's noise: each single-seed side's tau in quadrature (a side spread over seeds
    carries its own in its stderr, and passes None); None when neither side adds one."""
    terms = [t for t in (tau(metric, single_a), tau(metric, single_b)) if t is not None]
    return math.sqrt(sum(t * t for t in terms)) if terms else None


def shift_p(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """One-sided Fisher exact p that B has at least k_b of n_b replicates in the worse tier, given A's k_a of n_a."""
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k_b, n_b - k_b], [k_a, n_a - k_a]], alternative="greater").pvalue)


def groups(variants: dict[str, VariantResult]) -> dict[str, list[VariantResult]]:
    """Seed replicates by the variant they replicate, in run order; variants run once are not here."""
    out: dict[str, list[VariantResult]] = {}
    for v in variants.values():
        if v.seed_group:
            out.setdefault(v.seed_group, []).append(v)
    return out


def spread(values: list[float], higher_is_better: bool = True) -> Spread:
    """Mean, sample standard deviation (ddof=1), min and max of values (None where undefined)."""
    x = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not x:
        return Spread(n=0, higher_is_better=higher_is_better)
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else None
    return Spread(float(np.mean(x)), sd, min(x), max(x), len(x), higher_is_better, x)


def majority(verdicts: list[str]) -> str:
    """The most frequent verdict; among equally frequent ones the worse tier (a split vote is read cautiously)."""
    if not verdicts:
        return ""
    counts = Counter(verdicts)
    top = max(counts.values())
    return max((v for v, c in counts.items() if c == top), key=lambda v: (verdict_tier(v) or 0, v))


def variant_numbers(v: VariantResult) -> dict[str, Metric]:
    """The numbers of one replicate that are compared across seeds: its scores, its final held-out loss and the
    loss rule's checks (ratio growth, held-out rise, ...)."""
    out = dict(v.scores.metrics) if v.scores else {}
    la = v.loss_analysis
    if la is not None:
        out["final_heldout_loss"] = Metric(la.final_heldout_loss, higher_is_better=False)
        for c in la.checks:
            out[f"loss.{c.name}"] = Metric(c.value, higher_is_better=not c.bad_when_high)
    if v.copy_analysis is not None:
        for c in v.copy_analysis.evidence.checks:
            out[f"copy.{c.name}"] = Metric(c.value, higher_is_better=not c.bad_when_high)
    return out


def summarize_group(name: str, reps: list[VariantResult]) -> SeedSummary:
    """One variant's seed replicates in one summary."""
    done = [v for v in reps if v.status == "done"]
    verdicts = [final_verdict(v) for v in done]
    top = majority(verdicts)
    numbers = [variant_numbers(v) for v in done]
    names = list(dict.fromkeys(k for n in numbers for k in n))
    metrics = {}
    for k in names:
        ms = [n.get(k) for n in numbers]
        hib = next(m.higher_is_better for m in ms if m is not None)
        metrics[k] = spread([m.value for m in ms if m is not None and m.value is not None], hib)
    seeds = [[int(v.config.get("train", {}).get("seed", 0)), int(v.config.get("generate", {}).get("seed", 0))]
             for v in reps]
    return SeedSummary(variant=name, replicates=[v.name for v in reps], seeds=seeds,
                       verdicts=dict(Counter(verdicts)), verdict=top,
                       agreement=f"{verdicts.count(top)}/{len(verdicts)}" if verdicts else "0/0",
                       borderline=sum(bool(v.verdict and v.verdict.borderline) for v in done), metrics=metrics)


def summarize(variants: dict[str, VariantResult]) -> dict[str, SeedSummary]:
    """A SeedSummary per variant run over several seeds."""
    return {name: summarize_group(name, reps) for name, reps in groups(variants).items()}


def describe(s: SeedSummary) -> str:
    """"learning 4/5 (memorizing 1/5)": the majority verdict, its share, and the others."""
    n = sum(s.verdicts.values())
    rest = ", ".join(f"{v} {c}/{n}" for v, c in sorted(s.verdicts.items(), key=lambda kv: -kv[1]) if v != s.verdict)
    return f"{s.verdict} {s.agreement}" + (f" ({rest})" if rest else "")
