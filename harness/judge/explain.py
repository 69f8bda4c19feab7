"""Why a verdict is what it is: the clause of a rule that decided it, its numbers, and the samples behind it.

    why = explain(copy=judged.copy, rows=judged.rows)                   # `asciitune score`, `generate --score`
    why = explain(v.copy_analysis, v.loss_analysis, rows, final=v.verdict.verdict)  # a run's variant
    why.text()   # "noise: noise rate 0.6 against 0.5; also set test effect 0.97 against 0.85 (vertical bits,
                 #  p 2e-06). Samples: noise: samples 3, 7, 12 (3 of 5)"

Pure (no torch). Every printed verdict (`score`, `generate --score`, the run summary, the report's first screen)
is explained here, and nothing here re-derives one: a rule is a function of its checks' outcomes
(verdict.copy_rule, verdict.loss_rule), and each analysis stores its checks (RuleCheck: name, value, bound, fired,
text) in the order its rule reads them. The clause that decided is found by asking the rule itself: the shortest
prefix of the checks, as they fired, that gives the verdict with every later check passing; of that prefix, the
fired checks without which it would not. A verdict no check gave (novel, learning: the rule's last "otherwise") is
explained by the checks of its last clause, those whose firing alone would have given the rule's last other
verdict. So a check added to a rule, in its place in the list, is explained without a change here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.judge.verdict import SAMPLE_FLAGS, copy_rule, loss_rule
from harness.results import CopyAnalysis, LossAnalysis, RankTest, RuleCheck, SampleRow

MAX_NAMED = 10  # sample numbers named per group; the rest are counted


@dataclass
class Reason:
    """What one rule said and the checks that decided it."""

    rule: str  # "samples" (the copy rule) or "loss curves" (the loss rule)
    verdict: str
    checks: list[RuleCheck] = field(default_factory=list)  # fired checks that decided, or the last clause's, passed
    also: list[RuleCheck] = field(default_factory=list)  # later fired checks that alone give the same verdict
    passed: bool = False  # True when no check gave the verdict (the rule's "otherwise")

    def clause(self) -> str:
        """The verdict and the numbers that decided it, e.g. 'noise: set test effect 0.91 against 0.85'."""
        if not self.checks:
            return f"{self.verdict}: no check recorded"
        texts = "; ".join(_text(c) for c in self.checks)
        if self.passed:
            return f"{self.verdict}: every check passed ({texts})"
        also = f"; also {'; '.join(_text(c) for c in self.also)}" if self.also else ""
        return f"{self.verdict}: {texts}{also}"


@dataclass
class Explanation:
    """A verdict, the rule clause(s) that gave it, and the samples behind it (0-based sample numbers)."""

    verdict: str
    reasons: list[Reason]  # the deciding rule first
    samples: dict[str, list[int]]  # "copies" and each failure flag (verdict.SAMPLE_FLAGS) -> its samples
    n_samples: int = 0

    def samples_text(self) -> str:
        """The sample groups, the verdict's own first: 'noise: samples 3, 7 (2 of 20); cut off: sample 4 (1 of 20)'."""
        first = "copies" if self.verdict == "memorizing" else self.verdict
        order = sorted(self.samples, key=lambda k: k != first)
        parts = []
        for key in order:
            idx = self.samples[key]
            named = ", ".join(map(str, idx[:MAX_NAMED])) + (f" and {len(idx) - MAX_NAMED} more"
                                                              if len(idx) > MAX_NAMED else "")
            label = key.replace("_", " ")
            if len(idx) == self.n_samples > 1:
                parts.append(f"{label}: all {self.n_samples} samples")
            else:
                parts.append(f"{label}: sample{'s' * (len(idx) != 1)} {named} ({len(idx)} of {self.n_samples})")
        return "; ".join(parts)

    def text(self) -> str:
        """One line: the deciding clause (and the other rule's, where both gave the verdict), then the samples."""
        clauses = [f"{r.clause()} ({r.rule})" if len(self.reasons) > 1 else r.clause() for r in self.reasons]
        samples = self.samples_text()
        return "; ".join(clauses) + (f". Samples: {samples}" if samples else "")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {"verdict": self.verdict, "text": self.text(),
                "reasons": [{"rule": r.rule, "verdict": r.verdict, "clause": r.clause(),
                             "checks": [c.name for c in r.checks], "also": [c.name for c in r.also],
                             "passed": r.passed} for r in self.reasons],
                "samples": self.samples, "n_samples": self.n_samples}


def _text(c: RuleCheck) -> str:
    return c.text + (" (borderline)" if c.borderline else "")


def decided_by(checks: Sequence[RuleCheck], rule: Callable[[dict[str, bool]], str], verdict: str) -> Reason:
    """The checks of `rule` that gave `verdict` (module docstring); `rule` is only ever asked, never re-stated."""
    names = [c.name for c in checks]

    def ask(fired: set[str]) -> str:
        return rule({n: n in fired for n in names})

    for k, c in enumerate(checks):
        if not c.fired:
            continue
        prefix = {x.name for x in checks[: k + 1] if x.fired}
        if ask(prefix) != verdict:
            continue
        needed = [x for x in checks[: k + 1] if x.fired and ask(prefix - {x.name}) != verdict]
        also = [x for x in checks[k + 1:] if x.fired and ask({x.name}) == verdict]
        return Reason("", verdict, needed or [c], also)
    if checks and ask(set()) == verdict:
        # The rule's "otherwise": explained by its last clause, the checks whose firing alone would give what the
        # last check gives alone (for the copy rule: the checks that refuse "novel"; for the loss rule: train_drop).
        last = ask({checks[-1].name})
        return Reason("", verdict, [c for c in checks if last != verdict and ask({c.name}) == last], [], passed=True)
    return Reason("", verdict, [c for c in checks if c.fired])  # checks that do not give it alone: say them all


def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


def sample_groups(rows: Sequence[SampleRow | dict]) -> dict[str, list[int]]:
    """Sample numbers per group: 'copies' (by the copy rule's threshold, valid samples), then each failure flag."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        number = _get(row, "index")
        number = number if isinstance(number, int) else i
        if _get(row, "copy"):
            groups.setdefault("copies", []).append(number)
        for flag in SAMPLE_FLAGS:
            if _get(row, flag) is True:
                groups.setdefault(flag, []).append(number)
    order = ["copies", *SAMPLE_FLAGS]  # the flags in the order reports name them, whatever sample came first
    return {k: groups[k] for k in order if k in groups}


def copy_reason(copy: CopyAnalysis) -> Reason:
    """The copy rule's deciding clause; each set test's check also names its measure and p-value."""
    reason = decided_by(copy.evidence.checks, copy_rule, copy.verdict)
    reason.rule = "samples"
    if reason.passed:
        return reason
    typ, rep = copy.evidence.typicality, copy.evidence.repetition
    tests = [t for t in (typ.tests if typ is not None else []) if t.effect is not None]
    named = {}
    if tests:  # the typicality set test the check reports is the one with the largest effect
        named["set_noise"] = _test_words(max(tests, key=lambda t: t.effect))
    if rep is not None and rep.test.effect is not None:
        named["set_loop"] = _test_words(rep.test)
    # copies of the stored checks: an explanation never changes the analysis it reads
    reason.checks = [replace(c, text=c.text + named[c.name]) if c.name in named else c for c in reason.checks]
    reason.also = [replace(c, text=c.text + named[c.name]) if c.name in named else c for c in reason.also]
    return reason


def _test_words(test: RankTest) -> str:
    """' (vertical bits, p 2e-06)': a rank test's measure and p-value, for its check's text."""
    p = f", p {test.p_value:.1g}" if test.p_value is not None else ""
    return f" ({test.measure.replace('_', ' ')}{p})"


def loss_reason(loss: LossAnalysis) -> Reason:
    """The loss rule's deciding clause."""
    reason = decided_by(loss.checks, loss_rule, loss.verdict)
    reason.rule = "loss curves"
    return reason


def explain(copy: CopyAnalysis | None = None, loss: LossAnalysis | None = None,
            rows: Sequence[SampleRow | dict] = (), final: str = "") -> Explanation:
    """The final verdict (or the copy verdict, or the loss verdict) with the clause of each rule that gave it.

    final: the combined verdict (Verdict.verdict); without it, the copy verdict where there is one, else the loss
    verdict. A rule whose verdict is not the final one (the loss curves said learning, the samples noise) is left
    out: it did not decide.
    """
    verdict = final or (copy.verdict if copy is not None else loss.verdict if loss is not None else "")
    reasons = []
    if copy is not None and copy.verdict == verdict:
        reasons.append(copy_reason(copy))
    if loss is not None and loss.verdict == verdict:
        reasons.append(loss_reason(loss))
    if not reasons and copy is not None:  # a verdict neither rule gave alone: name the samples' clause
        reasons.append(copy_reason(copy))
    reasons.sort(key=lambda r: r.passed)  # a rule that fired on something decided; one that passed let it stand
    return Explanation(verdict, reasons, sample_groups(rows), len(rows))
