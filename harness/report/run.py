"""Run reports: a self-contained `index.html` (no JS, no network, plots embedded) and `report.md`.

    asciitune report reports/runs/<run-id>     # or just the run id

Pure (no torch): works on results copied from any machine. Every string that comes from
results or samples is escaped exactly once, in :class:`Doc`, so art such as
``<script>`` or ``&`` shows as text and whitespace is kept.
"""
from __future__ import annotations

from pathlib import Path

from harness.config import flatten
from harness.data import pieces_phrase
from harness.judge.verdict import QUALITY_METRICS, RANKING_RULE, final_verdict, quality, rank
from harness.report import plots, sections, story, sweep_plots
from harness.report.doc import Doc, fmt, fmt_bytes, fmt_mapping, fmt_metric
from harness.report.sweep import find_sweep
from harness.results import Metric, RunResult, VariantResult, load, resolve_run_dir

MAX_GALLERY = 12  # samples per variant in the gallery; the samples file keeps them all


def metric(v: VariantResult, name: str) -> Metric | None:
    """One score metric of a variant, if scored."""
    return v.scores.metrics.get(name)


def settings(run: RunResult, v: VariantResult) -> str:
    """The config keys where a variant differs from the run's base config."""
    base, own = flatten(run.base_config), flatten(v.config)
    diff = [f"{k}={fmt_mapping(val)}" for k, val in own.items() if k in base and base[k] != val]
    return ", ".join(diff) or "(base config)"


def _details(doc: Doc, run: RunResult) -> None:
    env, data = run.environment or {}, run.data or {}
    doc.section("Run details")
    doc.table(["field", "value"], [
        ["run id", run.run_id], ["created", run.created or "-"], ["command", run.command or "-"],
        ["config", f"{run.config_source or '-'} (hash {run.config_hash or '-'})"],
        ["data", f"{data.get('name', '-')} (hash {str(data.get('hash', '-'))[:16]}, "
                 f"{pieces_phrase(data)})"],
        ["git commit", fmt_mapping(env.get("git_commit"))], ["device", fmt_mapping(env.get("device"))],
        ["machine", fmt_mapping(env.get("machine"))], ["versions", fmt_mapping(env.get("versions"))],
        ["schema version", run.schema_version]])


def _leaderboard(doc: Doc, run: RunResult) -> None:
    doc.section("Leaderboard")
    doc.para(RANKING_RULE + " Uncertainties are in the Scores table; speed and memory in the cost table.", note=True)
    rows = []
    for i, v in enumerate(rank(list(run.variants.values())), 1):
        la = v.loss_analysis
        # Settings last: the one long cell wraps, so the table fits a 1280 px page.
        rows.append([i, v.name, final_verdict(v), fmt(quality(v)),
                     *(fmt_metric(metric(v, n), False) for n in (*QUALITY_METRICS, "exact_copy_rate")),
                     fmt(la.final_heldout_loss if la else None), settings(run, v)])
    doc.table(["rank", "variant", "verdict", "quality", *QUALITY_METRICS, "exact_copy_rate",
               "final held-out loss", "settings"], rows)
    failed = [[v.name, v.error or "-"] for v in run.variants.values() if v.status == "failed"]
    if failed:
        doc.heading("Failed variants")
        doc.table(["variant", "error"], failed)


def _image(doc: Doc, run_dir: Path, images: list[str], name: str, alt: str) -> None:
    if name in images:
        doc.image(run_dir / name, alt)


def _memorization(doc: Doc, run: RunResult) -> None:
    doc.section("Memorization")
    rows, rules = [], []
    for v in run.variants.values():
        la, ca = v.loss_analysis, v.copy_analysis
        rows.append([v.name, final_verdict(v), la.verdict if la else "-", ca.verdict if ca else "-",
                     fmt(ca.evidence.copy_rate if ca else None),
                     f"{fmt(la.heldout_min)} @ step {fmt(la.heldout_min_step)}" if la else "-",
                     fmt(la.onset_step if la else None), fmt(la.final_gap if la else None),
                     fmt(la.final_ratio if la else None),
                     fmt_metric(metric(v, "exact_copy_rate"), False), fmt_metric(metric(v, "near_copy_rate"), False)])
        for source in (v.verdict, la, ca):
            if source is not None and source.rule and source.rule not in rules:
                rules.append(source.rule)
    doc.table(["variant", "verdict", "loss verdict", "copy verdict", "copy rate", "held-out min", "onset step",
               "final gap (held-out - train)", "final ratio", "exact copies", "near copies"], rows)
    for rule in rules:
        doc.para(f"Rule: {rule}", note=True)


def _scores(doc: Doc, run: RunResult) -> None:
    names = plots.metric_names(run)
    if not names:
        return
    doc.section("Scores")
    doc.para("Each cell: value [95% CI] (or ± stderr). The human reference scores held-out human pieces the same "
             "way as samples, so it shows what good looks like on this data.", note=True)
    cols = [v for v in run.variants.values() if v.scores.metrics]
    rows = []
    for name in names:
        hib = next((m.higher_is_better for m in [metric(v, name) for v in cols]
                    + [run.human_reference.metrics.get(name)] if m), None)
        arrow = "" if hib is None else (" (higher better)" if hib else " (lower better)")
        rows.append([name + arrow, *(fmt_metric(metric(v, name)) for v in cols),
                     fmt_metric(run.human_reference.metrics.get(name))])
    doc.table(["metric", *(v.name for v in cols), plots.HUMAN], rows)


def _cost(doc: Doc, run: RunResult) -> None:
    doc.section("Training and generation cost")
    rows = []
    for v in (v for v in run.variants.values() if v.status != "failed"):
        t, g = v.train, v.generation
        rows.append([v.name, v.backend or "-", v.backend_note or "-", v.device or "-", fmt(t.steps), fmt(t.epochs),
                     fmt(t.seconds), fmt(t.tokens_per_s), f"{fmt_bytes(t.peak_memory_bytes)} {t.peak_memory_kind}",
                     fmt(t.trainable_parameters), fmt(g.n), fmt(g.tokens_per_s)])
    doc.table(["variant", "backend", "note", "device", "steps", "epochs", "train s", "train tokens/s", "peak memory",
               "trainable params", "samples", "generate tokens/s"], rows)


def _gallery(doc: Doc, run: RunResult, run_dir: Path) -> None:
    doc.section("Samples")
    doc.para("Each generated sample beside the training piece most similar to it (whitespace kept exactly).", note=True)
    for v in run.variants.values():
        samples = plots.samples_of(run_dir, v)
        doc.heading(f"{v.name} ({final_verdict(v)})")
        if not samples:
            doc.para(f"Failed: {v.error or 'no error recorded'}" if v.status == "failed" else
                     f"No readable samples{' in ' + v.samples_file if v.samples_file else ''}.")
            continue
        if len(samples) > MAX_GALLERY:
            doc.para(f"Showing {MAX_GALLERY} of {len(samples)} samples; all are in {v.samples_file}.", note=True)
        for s in samples[:MAX_GALLERY]:
            flags = [f for f, on in (("exact copy", s.get("exact_copy")), ("near copy", s.get("near_copy"))) if on]
            flags += [story.sample_state(s)] if s.get("valid") is False else []  # "invalid (looping, cut off)"
            cap = (f"sample {s.get('index', '?')}: novelty {fmt(s.get('novelty'))}, width consistency "
                   f"{fmt(s.get('width_consistency'))}" + (f" ({', '.join(flags)})" if flags else ""))
            nearest = s.get("nearest_train_text")
            right = None if nearest is None else (
                f"nearest training piece #{s.get('nearest_train_index', '?')}: similarity {fmt(s.get('similarity'))}"
                + (f"; first lines of #{s.get('head_train_index')}: {fmt(s['head_similarity'])}"
                   if s.get("head_similarity") else ""), str(nearest))
            doc.art_pair((cap, str(s.get("text", ""))), right, badge=story.badge(s))


def write_report(run_dir: str | Path, run: RunResult | None = None) -> Path:
    """Write plots, index.html and report.md into a run folder; returns the index.html path.

    The caller hands over the results it holds; only a bare run folder is read from disk.
    """
    run_dir = resolve_run_dir(run_dir)
    run = run if run is not None else load(run_dir)
    sweep = find_sweep(run)  # None unless the variants form a grid (harness.report.sweep)
    images = plots.plot_run(run, run_dir) + (story.plot_overview(run, run_dir) if run.variants else [])
    images += sweep_plots.plot_sweep(sweep, run_dir)
    doc = Doc(f"asciitune run {run.run_id}")
    if run.variants:  # a benchmark-only run has no variants: no story, leaderboard, cost or gallery
        story.story(doc, run, run_dir, images, sweep)  # the outcome first; metadata and full tables below
        doc.contents()
        sweep_plots.section(doc, sweep, run_dir, images)
        _leaderboard(doc, run)
        _memorization(doc, run)
        _image(doc, run_dir, images, "loss-curves.png", "train vs held-out loss per variant")
        _scores(doc, run)
        _image(doc, run_dir, images, "scores.png", "scores per variant with uncertainty")
        _image(doc, run_dir, images, "novelty.png", "novelty histograms")
        _cost(doc, run)
        sections.exports(doc, run)
    _details(doc, run)
    sections.bench(doc, run)
    _image(doc, run_dir, images, "bench-speed.png", "benchmark throughput, real workload and speed-up")
    _image(doc, run_dir, images, "bench-memory.png", "benchmark peak memory")
    if run.variants:
        _gallery(doc, run, run_dir)
    return doc.write(run_dir)
