"""A sweep read as an answer: its factors, each configuration's outcomes, the best one and whether its lead is real.

    asciitune run --config grid.toml          # [sweep] "train.lr" = [1e-4, 1e-3, 1e-2], "lora.r" = [4, 8]
    asciitune run --config grid.toml --seeds 2

Pure (no torch, no matplotlib: the plots are in harness.report.sweep_plots). A run is a sweep when its
configurations (a variant, or a variant's seed replicates together) differ in keys that form a grid: the keys
that always change together are one factor (a named variant crossed with a [sweep] grid changes its own keys
together), and the factors' levels cross to at least half of their grid. Named variants that differ in one key
are a sweep of one factor; the default config's three variants, which differ in three keys at once, are not.

The best configuration is the first by the ranking rule (harness.judge.verdict.RANKING_RULE, applied to each
configuration's majority verdict over seeds and its mean quality). Whether its lead over the next is real is
asked of the regression gate (harness.report.compare): the verdict shift by `verdict_change`, the numbers the
ranking compared by `unit_change`, the gate's own noise model with the seed model of harness.judge.seeds.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from harness.config import flatten
from harness.judge import seeds
from harness.judge.verdict import QUALITY_METRICS, final_verdict, quality, tier, verdict_tier
from harness.report.compare import NOISE_SIGMAS, Unit, stderr_of, unit_change, units, verdict_change
from harness.report.doc import fmt, fmt_apart
from harness.results import Metric, RunResult, VariantResult

# Bookkeeping, not a setting: seed replicates are grouped by VariantResult.seed_group, their seeds in own columns.
NOT_FACTORS = ("train.seeds",)
# (key, label, where from): the outcomes plotted against each factor. near_copy_rate is the scored copy rate (exact
# copies or >= 0.85 similar, over valid samples) that carries an interval; the copy rule's rate has none.
OUTCOMES = (("final_heldout_loss", "final held-out loss", "loss"), ("heldout_min", "minimum held-out loss", "loss"),
            ("valid_rate", "valid rate", "score"), ("novelty", "novelty (valid samples)", "score"),
            ("near_copy_rate", "copy rate (exact or near, valid samples)", "score"),
            ("onset_step", "memorization onset step", "loss"))
INTERVAL_RULE = (f"Intervals: ±{NOISE_SIGMAS:g} standard errors as the regression gate weighs the number (its own "
                 "stderr and, for one seed, the seed-noise model's tau, in quadrature; over seeds, the seeds' sd / "
                 "sqrt(n), never below one seed's); where the gate has no model (minimum held-out loss, onset step), "
                 "none for one seed and the seeds' range over seeds. Rates stay within 0-1, losses and steps above 0.")


def _value_id(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def fmt_value(value: Any) -> str:
    """A config value as a level reads: 0.001, 8, true, q_proj,v_proj."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(fmt_value(v) for v in value)
    return "-" if value is None else str(value)


@dataclass(frozen=True)
class Factor:
    """Config keys that change together across a run's configurations, and the values they take (its levels)."""

    keys: tuple[str, ...]
    levels: tuple[tuple[Any, ...], ...]  # one value per key, in level order
    names: tuple[str, ...] = ()  # how each key is written: its last part where that is unique in the sweep

    @property
    def label(self) -> str:
        """"lr", or "max_train_pieces, epochs" for keys that change together."""
        return ", ".join(self.names or self.keys)

    @property
    def numeric(self) -> bool:
        """One key whose values are all numbers: plotted on a number axis (log when they span a factor of 4)."""
        return len(self.keys) == 1 and all(isinstance(v[0], (int, float)) and not isinstance(v[0], bool)
                                           for v in self.levels)

    def level_label(self, i: int, with_name: bool = True) -> str:
        """"lr 0.001" (with_name) or "0.001"; several keys: "max_train_pieces 0, epochs 2"."""
        names = self.names or self.keys
        return ", ".join((f"{n} {fmt_value(v)}" if with_name else fmt_value(v))
                         for n, v in zip(names, self.levels[i], strict=True))


def varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Flattened config keys whose values are not the same in every config (a missing key counts as a value)."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if k not in NOT_FACTORS and len({_value_id(c.get(k)) for c in configs}) > 1]


def factors_of(configs: list[dict[str, Any]]) -> list[Factor]:
    """The varying keys grouped into factors: keys that split the configs the same way change together."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for key in varying_keys(configs):
        seen: dict[str, int] = {}
        groups.setdefault(tuple(seen.setdefault(_value_id(c.get(key)), len(seen)) for c in configs), []).append(key)
    out = []
    for keys in groups.values():
        levels = list(dict.fromkeys(tuple(_value_id(c.get(k)) for k in keys) for c in configs))
        values = [next(tuple(c.get(k) for k in keys) for c in configs
                       if tuple(_value_id(c.get(k)) for k in keys) == lv) for lv in levels]
        if len(keys) == 1 and all(isinstance(v[0], (int, float)) and not isinstance(v[0], bool) for v in values):
            values.sort(key=lambda v: v[0])
        out.append(Factor(tuple(keys), tuple(values)))
    last = [k.split(".")[-1] for f in out for k in f.keys]
    out = [Factor(f.keys, f.levels, tuple(k.split(".")[-1] if last.count(k.split(".")[-1]) == 1 else k
                                          for k in f.keys)) for f in out]
    # the factor with the most levels first: the map's columns, the outcome plots' first figure
    return sorted(out, key=lambda f: -len(f.levels))


@dataclass
class Point:
    """One outcome of one configuration: the value (mean over seeds), the interval drawn, and each seed's value."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    interval: str = ""  # "gate" (±2 se as the gate weighs it), "range" (the seeds' min-max), "" (none)
    values: list[float] = field(default_factory=list)


@dataclass
class Cell:
    """One configuration of a sweep: a variant, or a variant's seed replicates, and what came of it."""

    name: str  # the variant (replicate 0's name)
    level: tuple[int, ...]  # its level of each factor
    unit: Unit
    verdict: str  # the final verdict, the majority over seeds (harness.judge.seeds.majority)
    agreement: str  # "2/2" over seeds, "" for one seed
    loss_verdict: str  # the loss rule's verdict alone (the majority over seeds), "" where none was reached
    quality: float | None  # harness.judge.verdict.quality, the mean over the seeds that have one
    onsets: list[int]  # the memorization onset step of each replicate whose loss verdict is memorizing
    outcomes: dict[str, Point] = field(default_factory=dict)

    @property
    def replicates(self) -> list[VariantResult]:
        """Every replicate, failed ones included."""
        return self.unit.variants

    def rank_key(self) -> tuple:
        """RANKING_RULE's key: tier, then quality, then the final held-out loss (means over seeds), then the name."""
        if len(self.replicates) == 1:
            v = self.replicates[0]
            loss = v.loss_analysis.final_heldout_loss if v.loss_analysis else math.inf
            return tier(v), -(quality(v) or 0.0), loss, self.name
        losses = [v.loss_analysis.final_heldout_loss for v in self.unit.done if v.loss_analysis]
        scored = self.quality is not None and bool(self.unit.done)
        return ((min(verdict_tier(self.verdict) or 0, 2) if scored else 3), -(self.quality or 0.0),
                sum(losses) / len(losses) if losses else math.inf, self.name)


@dataclass
class Sweep:
    """A run read as a sweep: its factors and one cell per configuration, in run order."""

    factors: list[Factor]
    cells: list[Cell]
    seeds: int  # replicates per configuration (the most any has)

    def label(self, cell: Cell) -> str:
        """A configuration in words: "lr 0.001, r 8"."""
        return ", ".join(f.level_label(i) for f, i in zip(self.factors, cell.level, strict=True))

    def ranked(self) -> list[Cell]:
        """The cells in leaderboard order (RANKING_RULE)."""
        return sorted(self.cells, key=Cell.rank_key)


def onset_of(v: VariantResult) -> int | None:
    """The step where memorization began, for a variant whose loss curves say memorizing (as the story says it)."""
    la = v.loss_analysis
    return la.onset_step if la is not None and la.verdict == "memorizing" else None


def _one(v: VariantResult, key: str) -> Metric | None:
    """One replicate's outcome as a Metric (losses and the onset carry no stderr)."""
    la = v.loss_analysis
    if key == "final_heldout_loss":
        return Metric(la.final_heldout_loss, higher_is_better=False) if la else None
    if key == "heldout_min":
        return Metric(la.heldout_min, higher_is_better=False) if la else None
    if key == "onset_step":
        onset = onset_of(v)
        return Metric(float(onset), higher_is_better=True) if onset is not None else None
    return v.scores.metrics.get(key)


def _clipped(value: float, se: float, key: str, values: list[float]) -> Point:
    """value ± NOISE_SIGMAS x se, inside what the number can be: rates in [0, 1], losses and steps >= 0."""
    top = 1.0 if dict((k, kind) for k, _, kind in OUTCOMES)[key] == "score" else math.inf
    return Point(value, max(0.0, value - NOISE_SIGMAS * se), min(top, value + NOISE_SIGMAS * se), "gate", values)


def outcome(unit: Unit, key: str) -> Point:
    """One outcome of a configuration with its interval (INTERVAL_RULE)."""
    per = [m for m in (_one(v, key) for v in unit.done) if m is not None and m.value is not None]
    values = [float(m.value) for m in per]
    if not per:
        return Point()
    if len(unit.done) == 1:
        m = per[0]
        parts = [x for x in (stderr_of(m), seeds.tau(key, m)) if x is not None]
        if not parts:
            return Point(m.value, values=values)
        return _clipped(m.value, math.hypot(*parts), key, values)
    gated = unit.metrics().get(key)  # the gate's mean and stderr over seeds (compare.Unit.metrics)
    if gated is not None and gated.value is not None and key not in ("heldout_min", "onset_step"):
        return _clipped(gated.value, gated.stderr or 0.0, key, values)
    return Point(sum(values) / len(values), min(values), max(values), "range", values)


def _cell(name: str, unit: Unit, level: tuple[int, ...]) -> Cell:
    done = unit.done
    words = [final_verdict(v) for v in done]
    verdict = seeds.majority(words) if words else "failed"
    qualities = [q for q in (quality(v) for v in done) if q is not None]
    losses = [v.loss_analysis.verdict for v in done if v.loss_analysis]
    cell = Cell(name, level, unit, verdict,
                f"{words.count(verdict)}/{len(unit.variants)}" if len(unit.variants) > 1 else "",
                seeds.majority(losses) if losses else "",
                sum(qualities) / len(qualities) if qualities else None,
                [o for o in (onset_of(v) for v in done) if o is not None])
    cell.outcomes = {key: outcome(unit, key) for key, _, _ in OUTCOMES}
    return cell


def find_sweep(run: RunResult) -> Sweep | None:
    """The run as a sweep, or None when its configurations do not form one (see the module docstring)."""
    us = units(run)
    if len(us) < 2 or any(not u.first.config for u in us.values()):
        return None
    configs = [flatten(u.first.config) for u in us.values()]
    factors = factors_of(configs)
    if not factors or (len(factors) == 1 and len(factors[0].keys) > 1):
        return None  # named variants that differ in several keys at once: a comparison, not a sweep
    levels = []
    for c in configs:
        levels.append(tuple(next(i for i, lv in enumerate(f.levels)
                                 if tuple(_value_id(x) for x in lv) == tuple(_value_id(c.get(k)) for k in f.keys))
                            for f in factors))
    grid = math.prod(len(f.levels) for f in factors)
    if len(set(levels)) != len(levels) or 2 * len(levels) < grid:
        return None  # under half a grid: configurations picked by hand, not crossed
    cells = [_cell(name, u, lv) for (name, u), lv in zip(us.items(), levels, strict=True)]
    return Sweep(factors, cells, max(len(u.variants) for u in us.values()))


@dataclass
class Answer:
    """The best configuration by the ranking rule, the next, and whether the gate tells them apart."""

    best: Cell
    runner_up: Cell | None
    beyond_noise: bool
    ahead: list[str]  # what puts the best ahead beyond noise: "novelty 0.55 against 0.41"
    behind: list[str]  # what puts the next ahead beyond noise (a trade-off)
    within: list[str]  # what the ranking compared that is within noise


def _verdict_words(cell: Cell) -> str:
    return cell.verdict + (f" {cell.agreement}" if cell.agreement else "")


def answer(sweep: Sweep) -> Answer:
    """The first of the ranking and its lead over the second, as the regression gate would weigh the second
    against it: the verdict shift (compare.verdict_change) and, of the numbers the ranking compared (the quality
    metrics, or the final held-out loss where the qualities tie), each one's change (compare.unit_change). The
    lead is beyond noise when something puts the best ahead beyond noise and nothing puts the next ahead."""
    ranked = sweep.ranked()
    best, nxt = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    if nxt is None:
        return Answer(best, None, False, [], [], [])
    ahead, behind, within = [], [], []
    shift = verdict_change(best.unit.verdicts("verdict"), nxt.unit.verdicts("verdict"))
    words = f"verdict {_verdict_words(best)} against {_verdict_words(nxt)}"
    if shift == "regression":
        ahead.append(words)
    elif shift == "improvement":
        behind.append(words)
    elif best.verdict != nxt.verdict:
        within.append(words + " (within seed noise)")
    metrics = QUALITY_METRICS if best.quality != nxt.quality else ("final_heldout_loss",)
    mb, mn = best.unit.metrics(), nxt.unit.metrics()
    for name in metrics:
        delta, _, change = unit_change(name, best.unit, nxt.unit, mb, mn)
        if change not in ("regression", "improvement", "noise") or delta == 0:
            continue  # unmeasured or missing on a side, or equal: nothing that tells the two apart
        a, b = fmt_apart(mb[name].value, mn[name].value)
        text = f"{name} {a} against {b}"
        (ahead if change == "regression" else behind if change == "improvement" else within).append(text)
    return Answer(best, nxt, bool(ahead) and not behind, ahead, behind, within)


def answer_text(sweep: Sweep, ans: Answer) -> str:
    """The answer in one or two sentences, for the first screen."""
    def who(c: Cell) -> str:
        q = f", quality {fmt(c.quality)}" if c.quality is not None else ""
        return f"{sweep.label(c)} ({_verdict_words(c)}{q})"

    text = f"Best by the ranking rule: {who(ans.best)}"
    if ans.runner_up is None:
        return text + "."
    if ans.beyond_noise:
        return text + f", ahead of {who(ans.runner_up)} beyond the gate's noise model: {'; '.join(ans.ahead)}."
    text += f"; not distinguishable from {who(ans.runner_up)} at this sample size"
    if ans.ahead and ans.behind:
        return text + f": ahead on {'; '.join(ans.ahead)}, behind on {'; '.join(ans.behind)}, each beyond noise."
    return text + (f": {'; '.join(ans.within)}, within the gate's noise." if ans.within else ".")
