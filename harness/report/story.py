"""The first screen of a run report: one sentence per variant, the loss curves, a card of samples per variant.

Pure (no torch). A reader who opens a report wants the outcome before the metadata: which variant
learned, which memorized, and the numbers that say so. Every verdict comes from
harness.judge.verdict (stored in the results); this module only puts its evidence into words.
"""
from __future__ import annotations

from pathlib import Path

from harness.data import data_warnings, pieces_phrase
from harness.judge.explain import explain
from harness.judge.verdict import SAMPLE_FLAGS, final_verdict
from harness.report import plots
from harness.report.doc import Doc, fmt, fmt_apart
from harness.report.plots import COLORS, save_png  # the one PNG writer of every report plot (atomic, small, stable)
from harness.report.sweep import Sweep, answer, answer_text
from harness.results import RunResult, SeedSummary, VariantResult

BEST_WORST_RULE = ("Cards: each variant's best sample (valid before invalid, then the highest width consistency x "
                   "novelty) and its worst (the reverse), each beside the training piece most similar to it.")
OVERVIEW = "loss-overview.png"
Parts = list[tuple[str, str]]


def _num(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _product(s: dict) -> float:
    return _num(s.get("width_consistency")) * _num(s.get("novelty"))


def best_and_worst(samples: list[dict]) -> tuple[dict | None, dict | None]:
    """(best, worst) by BEST_WORST_RULE; worst is None when there is only one sample."""
    if not samples:
        return None, None
    ordered = sorted(samples, key=lambda s: (s.get("valid") is not True, -_product(s), _num(s.get("index"))))
    worst = min(samples, key=lambda s: (s.get("valid") is True, _product(s), _num(s.get("index"))))
    return ordered[0], (worst if worst is not ordered[0] else None)


def device_name(env: dict) -> str:
    """The device a run used, in a few words: its name (x count when several), or as recorded."""
    device = env.get("device") if isinstance(env, dict) else None
    if isinstance(device, dict):
        count = device.get("count")
        return str(device.get("name") or "-") + (f" x{count}" if isinstance(count, int) and count > 1 else "")
    return str(device) if device else "-"


def _pct(value: float) -> str:
    return f"{value:.0%}"


def loss_evidence(v: VariantResult) -> str:
    """The loss curves in one clause: held-out start, minimum and where, final, and the train loss's drop."""
    la, c = v.loss_analysis, v.curves
    if la is None:
        return ""
    last = c.steps[-1] if c.steps else v.train.steps
    start = c.heldout_loss[0] if c.heldout_loss else None
    rise = la.final_heldout_loss / la.heldout_min - 1 if la.heldout_min > 0 else 0.0
    # enough digits that unequal losses read unequal (11.55 -> 11.46, not 11.5 -> 11.5)
    start_s, min_s, final_s = fmt_apart(start, la.heldout_min, la.final_heldout_loss)
    if la.heldout_min_step == last:
        text = f"held-out loss fell from {start_s} to {min_s} by the last step ({fmt(last)})"
    elif c.steps and la.heldout_min_step == c.steps[0]:
        text = f"held-out loss never fell below its start, {min_s}, and ended at {final_s} ({rise:+.0%})"
    else:
        text = (f"held-out loss fell from {start_s} to its minimum {min_s} at step "
                f"{fmt(la.heldout_min_step)} of {fmt(last)}, then ended " +
                (f"at {final_s} ({rise:+.0%})" if rise >= 0.005 else "there"))
    drop = la.train_drop
    text += f", while train loss fell {_pct(drop)}" if drop >= 0 else f", while train loss rose {_pct(-drop)}"
    if la.verdict == "memorizing" and la.onset_step is not None:
        text += f"; memorizing after step {fmt(la.onset_step)}"
    t = v.train
    if t.stopped_at is not None:
        text += f"; stopped at step {fmt(t.stopped_at)} by train.stop_on ({fmt(t.steps_saved)} of " \
                f"{fmt(t.steps_planned)} steps saved)"
    if t.kept == "best" and t.kept_step is not None and t.kept_step != t.steps:
        text += f"; its samples are from its best adapter, step {fmt(t.kept_step)}"
    return text


def sample_evidence(run: RunResult, v: VariantResult) -> str:
    """The samples in one clause: valid rate, copy rate, loops, noise, novelty against unseen human pieces."""
    if not v.scores.metrics:
        return ""
    ca = v.copy_analysis
    copy = ca.evidence.copy_rate if ca else v.scores.value("exact_copy_rate")
    valid = v.scores.value("valid_rate")
    parts = []
    if valid is not None:
        parts.append(f"{_pct(valid)} are valid art")
    if copy is not None and valid:  # copy rates are over the valid samples
        parts.append(f"{_pct(copy)} of them copies")
    rep = ca.evidence.repetition if ca else None
    if rep is not None and (rep.loop_rate or rep.set_loop):
        parts.append(f"{_pct(rep.loop_rate)} loop (write a line or block again and again)"
                     + (" and as a set they repeat lines more than human art does" if rep.set_loop else ""))
    typ = ca.evidence.typicality if ca else None
    if typ is not None and (typ.noise_rate or typ.set_noise):
        parts.append(f"{_pct(typ.noise_rate)} are noise for the training art"
                     + (" and as a set they differ from human art" if typ.set_noise else ""))
    # The copy rule compares the novelty of valid samples with the human pieces'; say the same numbers when stored.
    own, human, what = v.scores.value("novelty"), run.human_reference.value("novelty"), "novelty"
    if ca and ca.evidence.novelty_valid.value is not None:
        own, human = ca.evidence.novelty_valid.value, ca.evidence.human_novelty_valid.value
        what = "novelty of the valid ones"
    if own is not None:
        parts.append(f"{what} {fmt(own)}" + (f" against {fmt(human)} for unseen human pieces" if human is not None
                                             else ""))
    return ", ".join(parts)


def verdict_sentence(run: RunResult, v: VariantResult, samples: list[dict] | None = None) -> Parts:
    """One sentence: the variant, its verdict (with the loss and copy verdicts behind it) and the numbers; then why,
    the clause that decided it and the samples behind it (harness.judge.explain), where it was judged."""
    verdict = final_verdict(v)
    if v.status == "failed":
        lines = [line.strip() for line in (v.error or "").splitlines() if line.strip()]
        why = lines[-1][:200] if lines else "no error recorded"
        return [(v.name, "b"), (" ", ""), ("failed", "verdict"), (f": {why.rstrip('.')}.", "")]
    parts: Parts = [(v.name, "b"), (" is ", ""), (verdict, "verdict")]
    if v.verdict and v.verdict.borderline:
        parts.append((f", borderline: {'; '.join(v.verdict.borderline)}", ""))
    if v.verdict and v.verdict.loss_verdict and v.verdict.copy_verdict:
        parts.append((f" (loss curves: {v.verdict.loss_verdict}; samples: {v.verdict.copy_verdict})", ""))
    evidence = "; ".join(x for x in (loss_evidence(v), sample_evidence(run, v)) if x)
    parts.append((f": {evidence}." if evidence else ".", ""))
    if v.copy_analysis is not None or v.loss_analysis is not None:
        why = explain(v.copy_analysis, v.loss_analysis, samples or [], v.verdict.verdict if v.verdict else "")
        parts.append((f" Why: {why.text()}.", ""))
    return parts


SPREAD_METRICS = (("final_heldout_loss", "held-out loss"), ("valid_rate", "valid"), ("novelty", "novelty"),
                  ("copied_line_share", "copied lines"), ("cross_entropy_bits", "cross-entropy bits"))


def seeds_sentence(s: SeedSummary) -> Parts:
    """One sentence per variant run over several seeds: its verdict distribution and its metrics' spread."""
    spreads = [f"{label} {fmt(sp.mean)} ± {fmt(sp.sd)} ({fmt(sp.min)}-{fmt(sp.max)})"
               for key, label in SPREAD_METRICS if (sp := s.metrics.get(key)) is not None and sp.mean is not None]
    parts: Parts = [(s.variant, "b"), (f" over {len(s.replicates)} seeds is ", ""), (s.verdict, "verdict"),
                    (f" {s.agreement}", "")]
    others = [f"{v} {c}" for v, c in s.verdicts.items() if v != s.verdict]
    if others:
        parts.append((" (" + ", ".join(others) + ")", ""))
    if s.borderline:
        parts.append((f", {s.borderline} of them borderline", ""))
    parts.append(((": mean ± sd across seeds: " + "; ".join(spreads) + ".") if spreads else ".", ""))
    return parts


def plot_overview(run: RunResult, out_dir: Path, name: str = OVERVIEW) -> list[str]:
    """Every variant's held-out (solid) and train (dashed) loss on one axes: the report's first-screen plot.

    One axes, not a panel per variant, so it stays readable at half a 1280 px page whatever the number of
    variants, and the variants' curves can be compared at a glance (which one bottoms out lowest, which turns up).
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    variants = [v for v in run.variants.values() if v.curves.steps]
    if not variants:
        return []
    # Labels are plain text: a '$' in a variant name must not start math mode (as in harness.report.plots).
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = Figure(figsize=(6.0, 3.1), layout="constrained")
        ax = fig.subplots()
        handles = []
        for i, v in enumerate(variants):
            c, color = v.curves, COLORS[i % len(COLORS)]
            n = min(len(c.steps), len(c.train_loss), len(c.heldout_loss))  # a run in progress may be ragged
            ax.plot(c.steps[:n], c.heldout_loss[:n], "o-", ms=3, lw=2, color=color)
            ax.plot(c.steps[:n], c.train_loss[:n], "--", lw=1.2, alpha=0.8, color=color)
            if v.loss_analysis is not None:
                la = v.loss_analysis
                ax.plot([la.heldout_min_step], [la.heldout_min], "*", ms=11, color=color, mec="black", mew=0.6)
            handles.append(Line2D([], [], color=color, lw=2, label=f"{v.name}: {final_verdict(v)}"))
        handles += [Line2D([], [], color="#444", lw=2, label="held-out"),
                    Line2D([], [], color="#444", lw=1.2, ls="--", label="train (probe)"),
                    Line2D([], [], color="#444", marker="*", ls="", ms=9, label="held-out minimum")]
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.set_title("Held-out and train loss per variant", fontsize=10)
        fig.legend(handles=handles, fontsize=8, loc="outside right upper")  # beside the axes: never over a curve
        return [save_png(fig, out_dir, name)]


def failure_flags(s: dict) -> list[str]:
    """A sample row's failure flags in words (verdict.SAMPLE_FLAGS order): "looping", "cut off", ..."""
    return [f.replace("_", " ") for f in SAMPLE_FLAGS if s.get(f) is True]


def badge(s: dict) -> str:
    """What marks a sample at a glance in cards and the gallery: "looping" for a loop, else nothing."""
    return "looping" if s.get("looping") is True else ""


def sample_state(s: dict) -> str:
    """ "valid", or "invalid" with its failure flags in words: "invalid (looping, cut off)"."""
    flags = failure_flags(s)
    return "valid" if s.get("valid") is True else "invalid" + (f" ({', '.join(flags)})" if flags else "")


def _caption(label: str, s: dict) -> str:
    state = sample_state(s)
    return (f"{label}, sample {s.get('index', '?')}: {state}; width consistency {fmt(s.get('width_consistency'))}, "
            f"novelty {fmt(s.get('novelty'))}")


def _nearest(s: dict) -> tuple[str, str] | None:
    if s.get("nearest_train_text") is None:
        return None
    head = (f", near copy of the first lines of #{s.get('head_train_index')} (similarity {fmt(s['head_similarity'])})"
            if s.get("head_similarity") else "")  # judge.score.COPY_HEADS
    copy = ", exact copy" if s.get("exact_copy") else head or (", near copy" if s.get("near_copy") else "")
    return (f"nearest training piece, #{s.get('nearest_train_index', '?')}: similarity {fmt(s.get('similarity'))}"
            f"{copy}", str(s["nearest_train_text"]))


def card(doc: Doc, run_dir: Path, v: VariantResult) -> None:
    """A variant's best and worst sample, each beside its nearest training piece."""
    doc.begin("card")
    doc.heading(f"{v.name}: {final_verdict(v)}")
    samples = plots.samples_of(run_dir, v)
    if v.status == "failed":
        doc.para(f"Failed: {v.error or 'no error recorded'}")
    elif not samples:
        doc.para("No readable samples.")
    best, worst = best_and_worst(samples)
    for label, s in (("best", best), ("worst", worst)):
        if s is not None:
            doc.art_pair((_caption(label, s), str(s.get("text", ""))), _nearest(s), badge=badge(s))
    doc.end()


def story(doc: Doc, run: RunResult, run_dir: Path, images: list[str], sweep: Sweep | None = None) -> None:
    """The first screen: for a sweep, the best configuration and whether its lead is beyond noise; what each variant
    did and why, the loss curves beside it, then a card per variant."""
    variants = list(run.variants.values())
    data = run.data or {}
    doc.begin("story", id="story")
    doc.begin("top")
    doc.begin("words")
    doc.para(f"{len(variants)} variant{'s' * (len(variants) != 1)} of {Path(run.config_source).stem or '-'} "
             f"on {device_name(run.environment)}, {(run.created or '-')[:16].replace('T', ' ')}; "
             f"{data.get('name', '-')}: {pieces_phrase(data)}.", note=True)
    for warning in data_warnings(data):  # an uneven split let through, art the judge calls invalid
        doc.para(f"Warning: {warning}", note=True)
    if sweep is not None:  # what a sweep was run to learn, before the variants one by one
        doc.begin("answer")
        doc.para(answer_text(sweep, answer(sweep)))
        doc.end()
    if run.seeds:  # the distribution first: one seed's verdict is one draw of it
        doc.sentences([seeds_sentence(s) for s in run.seeds.values()])
    doc.sentences([verdict_sentence(run, v, plots.samples_of(run_dir, v)) for v in variants])
    doc.end()
    if OVERVIEW in images:
        doc.image(run_dir / OVERVIEW, "held-out and train loss of every variant")
    doc.end()
    doc.para(BEST_WORST_RULE, note=True)
    doc.begin("cards")
    for v in variants:
        card(doc, run_dir, v)
    doc.end()
    doc.end()
