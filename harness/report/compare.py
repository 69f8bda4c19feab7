"""Compare runs: per-metric deltas with uncertainty, a regression gate, and a cross-run report.

    asciitune compare reports/runs/A reports/runs/B --fail-on novelty=0.05   # exit 1 on a real regression
    asciitune compare A B C --out reports/compare-abc                         # HTML + Markdown across runs

The first run is the baseline; every later run is compared with it, variant by variant
(same name; two single-variant runs are paired whatever their names). Pure: no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.judge import seeds
from harness.judge.verdict import final_verdict, verdict_tier
from harness.report.doc import Doc, fmt, fmt_apart, fmt_mapping, fmt_metric
from harness.results import Metric, RunResult, VariantResult

NOISE_SIGMAS = 2.0
RELATIVE_NOISE = 0.05  # for numbers stored without uncertainty (losses, speeds)
CI_WIDTH_IN_STDERRS = 2 * 1.96
NOISE_RULE = (
    "A change B - A is noise when |B - A| < 2 x sqrt(stderr_A^2 + stderr_B^2), the stderr taken from the metric "
    "or else from its 95% CI (width / 3.92); for numbers stored without uncertainty (losses, speeds) it is noise "
    "when |B - A| < 5% of |A|. Any other change is an improvement or a regression by the metric's direction. A "
    "metric computed over different samples in A and B (e.g. novelty over all samples in results written before "
    "it was computed over valid ones) is incomparable.")
# Gated without a threshold: how often a variant draws art at all, how often it loops, and how well it predicts
# unseen art. Verdict tiers alone miss a regression from a baseline already in the bottom tier (a learn variant
# judged noise against a memorizing one, or against the same adapter sampled into loops: "mixed" even ranks above
# "noise"). Loops are gated on their own because at 16 samples valid_rate's seed noise hides them: on the default
# config at 5 seeds, learn's adapters resampled at temperature 0.6 / min_p 0.2 looped at 0.38-0.62 against learn's
# 0-0.12, and with valid_rate and the held-out loss alone 10 of those 20 pairs passed the gate
# (reports/examples/gate-calibration.json, which measures the rates with these three gated).
GATED = ("valid_rate", "loop_rate", "final_heldout_loss")
GATE_RULE = ("The gate fails (exit 1), with or without thresholds, when a variant's verdict or copy verdict moved to "
             "a worse tier beyond seed noise (learning or novel -> mixed or undertrained -> memorizing, noise or "
             "invalid -> failed; one seed's verdict counts when it is not borderline, verdicts over seeds when a "
             f"Fisher exact test puts the shift below chance); when {' or '.join(GATED)} is classified a regression "
             "(beyond seed-to-seed variation); and when a metric with a threshold is classified a regression and "
             "got worse by more than its threshold, in any variant of any run compared with the baseline, or when a "
             "metric with a threshold that the baseline measured is missing from a run (e.g. the variant failed).")


@dataclass(frozen=True)
class VerdictChange:
    """One verdict (final or copy) of one variant, baseline run A against run B."""

    variant: str
    metric: str  # "verdict" or "copy_verdict"
    run_a: str
    run_b: str
    a: str
    b: str
    change: str  # improvement | regression (a worse tier) | same tier


@dataclass(frozen=True)
class Delta:
    """One metric of one variant, baseline run A against run B."""

    variant: str
    metric: str
    run_a: str
    run_b: str
    a: Metric | None
    b: Metric | None
    delta: float | None  # B - A
    stderr: float | None  # combined, sqrt(sa^2 + sb^2)
    higher_is_better: bool
    change: str  # improvement | regression | noise | missing (from one run) | unmeasured (in both) | incomparable

    @property
    def worse_by(self) -> float:
        """How much worse B is than A in the metric's own direction (negative when better)."""
        if self.delta is None:
            return 0.0
        return -self.delta if self.higher_is_better else self.delta


@dataclass(frozen=True)
class Failure:
    """A regression beyond its threshold."""

    delta: Delta | VerdictChange
    threshold: float

    def message(self) -> str:
        """One line naming the metric, variant, run and amounts."""
        d = self.delta
        # runs named in the order of the values: baseline first, as "A -> B"
        if isinstance(d, VerdictChange):
            return f"{d.metric} ({d.variant}, {d.run_a} -> {d.run_b}): {d.a} -> {d.b}, a worse verdict"
        if d.change == "missing":
            return f"{d.metric} ({d.variant}): measured in {d.run_a} but missing from {d.run_b}"
        a, b = fmt_apart(d.a and d.a.value, d.b and d.b.value)
        return (f"{d.metric} ({d.variant}, {d.run_a} -> {d.run_b}): {a} -> {b}, worse by {fmt(d.worse_by)} > "
                f"{fmt(self.threshold)}")


@dataclass
class Comparison:
    """The outcome of comparing runs with the first (the baseline)."""

    labels: list[str]
    runs: list[RunResult]
    deltas: list[Delta] = field(default_factory=list)
    verdicts: list[VerdictChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """True when a verdict got worse or a regression exceeded its threshold."""
        return bool(self.failures)


def stderr_of(m: Metric | None) -> float | None:
    """The metric's stderr, else one derived from its 95% CI, else None."""
    if m is None:
        return None
    if m.stderr is not None:
        return float(m.stderr)
    if m.ci_low is not None and m.ci_high is not None:
        return (m.ci_high - m.ci_low) / CI_WIDTH_IN_STDERRS
    return None


def classify(a: Metric | None, b: Metric | None, higher_is_better: bool,
             seed_sd: float | None = None) -> tuple[float | None, float | None, str]:
    """(delta, combined stderr, change) under NOISE_RULE; "missing" when one side has no value, "unmeasured" when
    neither has (a metric over valid samples where no sample of either run was valid).

    seed_sd: how much the difference itself moves from seed to seed beyond the metrics' own stderrs (both sides
    together; harness.judge.seeds.seed_sd), added in quadrature; None leaves the stderrs alone.
    """
    has_a, has_b = a is not None and a.value is not None, b is not None and b.value is not None
    if not (has_a and has_b):
        return None, None, "missing" if has_a or has_b else "unmeasured"
    delta = b.value - a.value
    sa, sb = stderr_of(a), stderr_of(b)
    combined = math.sqrt(sa ** 2 + sb ** 2) if sa is not None and sb is not None else None
    if seed_sd is not None:
        combined = math.sqrt((sa or 0.0) ** 2 + (sb or 0.0) ** 2 + seed_sd ** 2)
    if delta == 0:
        return delta, combined, "noise"
    if combined is not None:
        noise = abs(delta) < NOISE_SIGMAS * combined
    else:
        noise = abs(delta) < RELATIVE_NOISE * abs(a.value)
    if noise:
        return delta, combined, "noise"
    return delta, combined, "improvement" if (delta > 0) == higher_is_better else "regression"


def variant_metrics(v: VariantResult) -> dict[str, Metric]:
    """Score metrics (each over its population: valid samples for novelty and the like) plus loss and speed."""
    out = dict(v.scores.metrics)
    if v.loss_analysis is not None:
        out["final_heldout_loss"] = Metric(v.loss_analysis.final_heldout_loss, higher_is_better=False)
    if v.train.tokens_per_s:
        out["train_tokens_per_s"] = Metric(v.train.tokens_per_s, higher_is_better=True)
    return out


@dataclass
class Unit:
    """A variant as compare weighs it: one run of it, or all its seed replicates (harness.judge.seeds)."""

    name: str
    variants: list[VariantResult]

    @property
    def done(self) -> list[VariantResult]:
        """The replicates that finished."""
        return [v for v in self.variants if v.status == "done"]

    @property
    def first(self) -> VariantResult:
        """Replicate 0 (the variant itself when run once): config, backend and status for warnings."""
        return self.variants[0]

    def metrics(self) -> dict[str, Metric]:
        """One run's metrics as they are; over seeds each metric's mean with stderr sd / sqrt(n), the sd the seeds'
        own, but never below what the seed-noise model expects of one seed (seeds.tau and the replicates' own
        stderrs): a handful of seeds can agree by chance (3 seeds of an undertrained variant: a held-out loss sd of
        0.0015, where the model says 0.14), and a gate that trusted that would fail on a reseed."""
        if len(self.variants) == 1:
            return variant_metrics(self.first)
        per = [variant_metrics(v) for v in self.done]
        out = {}
        for name in dict.fromkeys(k for m in per for k in m):
            ms = [m[name] for m in per if name in m and m[name].value is not None]
            if ms:
                sp = seeds.spread([m.value for m in ms], ms[0].higher_is_better)
                one = Metric(sp.mean, math.sqrt(sum((m.stderr or 0.0) ** 2 for m in ms) / len(ms)))
                floor = math.hypot(one.stderr, seeds.tau(name, one) or 0.0)
                sd = max(sp.sd or 0.0, floor)
                out[name] = Metric(sp.mean, sd / math.sqrt(sp.n) if sd > 0 else None, sp.min, sp.max, sp.n,
                                   sp.higher_is_better)
        return out

    def verdicts(self, which: str) -> list[tuple[str, bool]]:
        """(verdict, borderline) per replicate: the final verdict, or the copy verdict."""
        if which == "verdict":
            return [(final_verdict(v), bool(v.verdict and v.verdict.borderline)) for v in self.variants]
        return [(v.copy_analysis.verdict, any(c.borderline for c in v.copy_analysis.evidence.checks))
                for v in self.variants if v.copy_analysis is not None]


def units(run: RunResult) -> dict[str, Unit]:
    """A run's variants as compare weighs them: seed replicates together under their variant's name."""
    groups = seeds.groups(run.variants)
    out = {name: Unit(name, reps) for name, reps in groups.items()}
    for name, v in run.variants.items():
        if not v.seed_group:
            out[name] = Unit(name, [v])
    order = list(dict.fromkeys(v.seed_group or name for name, v in run.variants.items()))
    return {n: out[n] for n in order}


def unit_change(metric: str, ua: Unit, ub: Unit, ma: dict[str, Metric] | None = None,
                mb: dict[str, Metric] | None = None) -> tuple[float | None, float | None, str]:
    """One metric of unit B against baseline unit A as the gate weighs it: classify() with the seed-noise model
    for a side run once (a side over seeds carries its spread in its stderr). ma, mb: the units' metrics, if held."""
    a, b = (ma if ma is not None else ua.metrics()).get(metric), (mb if mb is not None else ub.metrics()).get(metric)
    hib = (a or b).higher_is_better if (a or b) is not None else True
    return classify(a, b, hib, seeds.seed_sd(metric, a if len(ua.done) == 1 else None,
                                             b if len(ub.done) == 1 else None))


def population(v: VariantResult, metric: str) -> str:
    """The samples a metric is computed over; results written before populations were recorded used all."""
    return v.scores.populations.get(metric, "all") if metric in v.scores.metrics else "all"


def _label(votes: list[tuple[str, bool]]) -> str:
    """A side's verdict as printed: the verdict, or the majority and its share over seeds."""
    words = [w for w, _ in votes]
    if len(words) == 1:
        return words[0] + (" (borderline)" if votes[0][1] else "")
    top = seeds.majority(words)
    return f"{top} {words.count(top)}/{len(words)}"


def verdict_change(a: list[tuple[str, bool]], b: list[tuple[str, bool]]) -> str:
    """regression, improvement or same tier, by VERDICT_RULE."""
    if not a or not b:
        return "same tier"

    def worse(x: list[tuple[str, bool]], y: list[tuple[str, bool]]) -> bool:  # y worse than x, beyond seed noise
        tx, ty = (verdict_tier(seeds.majority([w for w, _ in v])) for v in (x, y))
        if tx is None or ty is None or ty <= tx:
            return False
        if len(x) >= 2 and len(y) >= 2:  # both spread over seeds: the shift must be unlikely by chance
            k_x = sum((verdict_tier(w) or 0) >= ty for w, _ in x)
            k_y = sum((verdict_tier(w) or 0) >= ty for w, _ in y)
            return seeds.shift_p(k_x, len(x), k_y, len(y)) < seeds.VERDICT_ALPHA
        # a verdict read from one seed counts when it was decided with room to spare
        return not (len(y) == 1 and y[0][1])

    return "regression" if worse(a, b) else "improvement" if worse(b, a) else "same tier"


def verdict_changes(name: str, ua: Unit, ub: Unit, run_a: str, run_b: str) -> list[VerdictChange]:
    """The final and copy verdicts of one variant in two runs, each an improvement, a regression or the same tier."""
    out = []
    for which in ("verdict", "copy_verdict"):
        a, b = ua.verdicts(which), ub.verdicts(which)
        if which == "copy_verdict" and (not a or not b):
            continue
        out.append(VerdictChange(name, which, run_a, run_b, _label(a), _label(b), verdict_change(a, b)))
    return out


def _model(run: RunResult, v: VariantResult) -> str:
    return str(((v.config or {}).get("model") or {}).get("name") or (run.base_config.get("model") or {}).get("name"))


def _labels(runs: list[RunResult]) -> list[str]:
    labels: list[str] = []
    for run in runs:
        label = run.run_id or "run"
        labels.append(label if label not in labels else f"{label} ({len(labels) + 1})")
    return labels


def _pairs(a: RunResult, b: RunResult) -> list[tuple[str, Unit, Unit]]:
    ua, ub = units(a), units(b)
    common = [n for n in ua if n in ub]
    if not common and len(ua) == len(ub) == 1:
        (na, xa), (nb, xb) = next(iter(ua.items())), next(iter(ub.items()))
        return [(na if na == nb else f"{na} / {nb}", xa, xb)]
    return [(n, ua[n], ub[n]) for n in common]


def _check_comparable(base: RunResult, other: RunResult, label: str, base_label: str) -> list[str]:
    warn = []
    if other.schema_version != base.schema_version:
        raise UserError(f"Run {label} uses results schema {other.schema_version} but {base_label} uses "
                        f"{base.schema_version}: re-run one of them with the same asciitune version.")
    dh_a, dh_b = (base.data or {}).get("hash"), (other.data or {}).get("hash")
    if dh_a != dh_b:
        warn.append(f"{label} used different data than {base_label} (hash {str(dh_b)[:12]} vs {str(dh_a)[:12]}): "
                    "scores are not measured on the same pieces.")
    for key, what in (("device", "device"), ("machine", "machine")):
        x, y = (base.environment or {}).get(key), (other.environment or {}).get(key)
        if x != y:
            warn.append(f"{label} ran on a different {what} than {base_label} ({fmt_mapping(y)} vs "
                        f"{fmt_mapping(x)}): speed and memory are not comparable.")
    for name, ua, ub in _pairs(base, other):
        va, vb = ua.first, ub.first
        if _model(base, va) != _model(other, vb):
            warn.append(f"Variant {name}: {label} trained model {_model(other, vb)} but {base_label} trained "
                        f"{_model(base, va)}.")
        if va.backend and vb.backend and va.backend != vb.backend:
            warn.append(f"Variant {name}: {label} used backend {vb.backend} but {base_label} used {va.backend}.")
    return warn


def compare(runs: list[RunResult], thresholds: dict[str, float] | None = None) -> Comparison:
    """Compare every run with the first: deltas, noise classification, warnings, and threshold failures."""
    if len(runs) < 2:
        raise UserError("Compare needs at least two runs: pass a baseline run and one or more runs to compare.")
    labels = _labels(runs)
    comp = Comparison(labels=labels, runs=runs, thresholds=dict(thresholds or {}))
    base = runs[0]
    for label, run in zip(labels[1:], runs[1:], strict=True):
        comp.warnings += _check_comparable(base, run, label, labels[0])
        pairs = _pairs(base, run)
        paired = {p[1].name for p in pairs}
        comp.unmatched += [f"{n} (only in {labels[0]})" for n in units(base) if n not in paired]
        comp.unmatched += [f"{n} (only in {label})" for n in units(run) if n not in {p[2].name for p in pairs}]
        for name, ua, ub in pairs:
            va, vb = ua.first, ub.first
            ma, mb = ua.metrics(), ub.metrics()
            for v in ub.variants:
                if v.status == "failed" and va.status != "failed":
                    comp.warnings.append(f"Variant {v.name} failed in {label}: {v.error or 'no error recorded'}")
            if not ma and not mb:
                comp.unmatched.append(f"{name} (no metrics in either run)")
            comp.verdicts += verdict_changes(name, ua, ub, labels[0], label)
            for metric in [*ma, *(m for m in mb if m not in ma)]:
                a, b = ma.get(metric), mb.get(metric)
                hib = (a or b).higher_is_better
                delta, se, change = unit_change(metric, ua, ub, ma, mb)
                if a is not None and b is not None and population(va, metric) != population(vb, metric):
                    change = "incomparable"
                    comp.warnings.append(f"Variant {name}: {metric} is over {population(vb, metric)} samples in "
                                         f"{label} but over {population(va, metric)} in {labels[0]}: not compared.")
                comp.deltas.append(Delta(name, metric, labels[0], label, a, b, delta, se, hib, change))
    comp.unmatched = list(dict.fromkeys(comp.unmatched))
    if not comp.deltas:
        raise UserError(f"The runs share no variant ({', '.join(comp.unmatched)}): compare runs of the same "
                        "config, or two single-variant runs.")
    known = sorted({d.metric for d in comp.deltas})
    unknown = [m for m in comp.thresholds if m not in known]
    if unknown:
        raise UserError(f"No metric named {', '.join(unknown)} in these runs: thresholds can use {', '.join(known)}.")
    comp.failures = [Failure(d, comp.thresholds[d.metric]) for d in comp.deltas if d.metric in comp.thresholds
                     and ((d.change == "regression" and d.worse_by > comp.thresholds[d.metric])
                          or (d.change == "missing" and d.a is not None and d.a.value is not None))]
    comp.failures += [Failure(d, 0.0) for d in comp.deltas
                      if d.metric in GATED and d.metric not in comp.thresholds and d.change == "regression"]
    comp.failures += [Failure(v, 0.0) for v in comp.verdicts if v.change == "regression"]
    return comp


def _signed(x: float | None) -> str:
    return "-" if x is None else ("+" if x >= 0 else "") + fmt(x)


DELTA_HEADERS = ["variant", "metric", "run", "A", "B", "B - A", "±2se", "change"]


def delta_rows(comp: Comparison) -> list[list[str]]:
    """One row of plain text per delta (DELTA_HEADERS), for the terminal and CI logs; '!' marks a gate failure."""
    rows = []
    for d in comp.deltas:
        a, b = fmt_apart(d.a and d.a.value, d.b and d.b.value)  # 11.46 -> 11.54 must not read 11.5 -> 11.5
        rows.append([d.variant, d.metric + (" ↑" if d.higher_is_better else " ↓"), d.run_b, a, b, _signed(d.delta),
                     "-" if d.stderr is None else fmt(NOISE_SIGMAS * d.stderr, 2),
                     d.change + (" !" if any(f.delta is d for f in comp.failures) else "")])
    for v in comp.verdicts:
        rows.append([v.variant, v.metric, v.run_b, v.a, v.b, "-", "-",
                     v.change + (" !" if v.change == "regression" else "")])
    return rows


def write_comparison(comp: Comparison, out_dir: str | Path) -> Path:
    """Write index.html, report.md and a plot comparing all runs into out_dir; returns the HTML path."""
    from harness.report import plots  # matplotlib (seconds on a fresh machine): only when drawing

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = Doc(f"asciitune comparison: {' vs '.join(comp.labels)}")
    doc.table(["run", "created", "config hash", "data hash", "device", "git commit"],
              [[label, r.created or "-", r.config_hash or "-", str((r.data or {}).get("hash", "-"))[:16],
                fmt_mapping((r.environment or {}).get("device")), fmt_mapping((r.environment or {}).get("git_commit"))]
               for label, r in zip(comp.labels, comp.runs, strict=True)])
    doc.para(f"Baseline: {comp.labels[0]}. {NOISE_RULE} {GATE_RULE}", note=True)
    if comp.warnings:
        doc.section("Warnings")
        for w in comp.warnings:
            doc.para(w)
    if comp.verdicts:
        doc.section("Verdicts")
        doc.table(["variant", "verdict", "run", "A", "B", "change"],
                  [[v.variant, v.metric, v.run_b, v.a, v.b, v.change] for v in comp.verdicts])
    if comp.failures or comp.thresholds:
        doc.section("Regression gate")
        doc.para("FAILED: " + "; ".join(f.message() for f in comp.failures) if comp.failures else
                 "Passed: no worse verdict and no regression beyond a threshold.")
        doc.table(["metric", "may get worse by"], [[m, fmt(t)] for m, t in comp.thresholds.items()])
    others = comp.labels[1:]
    values: dict[str, dict[str, list[Metric | None]]] = {}
    doc.section("Metrics by variant")
    for variant in dict.fromkeys(d.variant for d in comp.deltas):
        doc.heading(variant)
        by = {(d.metric, d.run_b): d for d in comp.deltas if d.variant == variant}
        rows = []
        for metric in dict.fromkeys(m for m, _ in by):
            ds = [by.get((metric, label)) for label in others]
            base = next((d.a for d in ds if d and d.a), None)
            cells = [base] + [d.b if d else None for d in ds]
            values.setdefault(metric, {})[variant] = cells
            rows.append([metric, *(fmt_metric(c) for c in cells),
                         *(x for d in ds for x in ((_signed(d.delta), d.change) if d else ("-", "-")))])
        doc.table(["metric", *comp.labels, *(x for label in others for x in (f"Δ {label}", f"change {label}"))], rows)
    if comp.unmatched:
        doc.para("Not compared: " + ", ".join(comp.unmatched) + ".", note=True)
    for name in plots.plot_comparison(comp.labels, values, out):
        doc.section("Plot")
        doc.image(out / name, "metrics per run")
    return doc.write(out)
