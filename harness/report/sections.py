"""Number formats and the benchmark and export sections of a run report (harness.report.run).

Pure (no torch). Every cell and sentence is plain text handed to :class:`harness.report.doc.Doc`,
which escapes it once; nothing here builds HTML.
"""
from __future__ import annotations

from typing import Any

from harness.report import plots
from harness.report.doc import Doc, fmt, fmt_bytes, fmt_mapping, fmt_metric, fmt_pct
from harness.results import RunResult, to_jsonable

UNEXPORTED = "unexported"  # harness.export.quality's key for the model as trained (not imported: it pulls in backends)
EXPORT_METRICS = ("width_consistency", "novelty", "valid_rate")


def _dicts(items: Any) -> list[dict]:
    return [p for p in items if isinstance(p, dict)] if isinstance(items, list) else []


def _ratio(value: Any) -> str:
    # Three decimals: the question asked of it is whether it is within 1.03.
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _point_rows(points: list[dict], kind: str | None) -> list[list[str]]:
    """Points grouped by name (both backends of a point side by side), grid before workload."""
    order = {name: i for i, name in enumerate(plots.names_in_order(points))}
    rows = []
    for p in sorted(points, key=lambda p: (order.get(plots.point_name(p), len(order)), str(p.get("backend")))):
        rows.append([plots.point_name(p), kind or ("workload" if plots.is_workload(p) else "grid"),
                     p.get("backend", "-"), p.get("workload", "-"), fmt(p.get("batch_size")),
                     fmt(p.get("grad_accum")), fmt(p.get("seq_len")), p.get("optim", "-"), p.get("status", "-"),
                     fmt(p.get("median_step_s")), fmt(p.get("step_s_iqr")), fmt(p.get("tokens_per_s")),
                     fmt_bytes(p.get("peak_allocated_bytes")), fmt_bytes(p.get("peak_reserved_bytes")),
                     fmt_pct(p.get("mfu"))])
    return rows


def parity_sentence(parity: dict) -> str:
    """The parity check's finding (one sentence) and its tolerance."""
    text = str(parity.get("finding") or "").strip()
    if not text:
        verdict = {True: "Losses agree within tolerance", False: "Losses do not agree within tolerance"}
        diffs = [f"{k.replace('_', ' ')} {fmt(parity[k])}" for k in ("max_rel_diff", "max_abs_diff")
                 if isinstance(parity.get(k), (int, float))]
        text = verdict.get(parity.get("ok"), "Loss parity was checked") + (f" ({', '.join(diffs)})." if diffs else ".")
    tol = parity.get("tolerance_rel")
    if isinstance(tol, (int, float)):
        steps = f" over the first {parity['steps']} steps" if parity.get("steps") else ""
        ref = f", against {parity['reference']}" if parity.get("reference") else ""
        text += f" Tolerance: {fmt_pct(tol)} relative difference per step{steps}{ref}."
    elif parity.get("tolerance") is not None:
        text += f" Tolerance: {fmt(parity['tolerance'])}."
    return text


def bench(doc: Doc, run: RunResult) -> None:
    """GPU benchmark: every point (grid, workload, extra), harness vs bare loop, loss parity in one sentence."""
    b = run.bench
    if b is None:
        return
    # The points are rendered through their JSON view, the same shape plots and the raw files use.
    points, extra = [to_jsonable(p) for p in b.points], [to_jsonable(p) for p in b.extra_points]
    parity, bare = b.parity, b.bare_loop
    comparison = _dicts(bare.get("comparison"))
    if not points and not extra and not parity and not comparison:
        return
    doc.section("GPU benchmark")
    note = f" ({b.matmul_note})" if b.matmul_note else ""
    doc.para(f"Card: {fmt_mapping(b.card)}; measured matmul TFLOPS: {fmt(b.matmul_tflops)}{note}.")
    if b.note:
        doc.para(f"Note: {b.note}", note=True)
    if points or extra:
        doc.para("Step times are medians after warm-up (seconds, with their interquartile range); tokens/s counts "
                 "real (non-padding) tokens. A workload point trains on the real pieces, its seq len being their "
                 "mean real length; extra points repeat a grid shape with one setting changed (see optim).", note=True)
        doc.table(["point", "kind", "backend", "workload", "batch", "grad accum", "seq len", "optim", "status",
                   "median step s", "step s IQR", "tokens/s", "peak allocated", "peak reserved", "MFU"],
                  _point_rows(points, None) + _point_rows(extra, "extra"))
    failed = [[plots.point_name(p), p.get("backend", "-"), p.get("status", "-"), p["error"]]
              for p in points + extra if p.get("status") != "ok" and p.get("error")]
    if failed:
        doc.heading("Points that did not finish")
        doc.table(["point", "backend", "status", "error"], failed)
    if comparison:
        doc.heading("Harness vs bare training loop")
        script = str(bare.get("script") or "a bare loop")
        script += f" (sha256 {bare['sha256']})" if bare.get("sha256") else ""
        shape = f" at batch {bare['batch_size']} x {bare['seq_len']} tokens" if bare.get("batch_size") else ""
        doc.para(f"The same step in {script}{shape}, same weights and card; ratio = harness step time / bare-loop "
                 "step time (1.0 = no harness overhead). Harness compute = the synchronized step without the work "
                 "between steps.", note=True)
        doc.table(["backend", "harness point", "optim", "harness step s", "harness compute s", "bare loop step s",
                   "ratio", "within 3%"],
                  [[c.get("backend", "-"), c.get("harness_point", "-"), c.get("optim", "-"),
                    fmt(c.get("harness_step_s"), 4), fmt(c.get("harness_compute_s"), 4), fmt(c.get("bare_step_s"), 4),
                    _ratio(c.get("ratio")), {True: "yes", False: "no"}.get(c.get("within_3pct"), "-")]
                   for c in comparison])
    if parity:
        doc.heading("Loss parity between backends")
        doc.para(parity_sentence(parity))
        if parity.get("why"):
            why = str(parity["why"]).rstrip()
            doc.para(f"Why this tolerance: {why}{'' if why.endswith(('.', '!', '?')) else '.'}", note=True)


def exports(doc: Doc, run: RunResult) -> None:
    """Quality per export format: each format's size, load time and scores beside the unexported model's."""
    variants = [v for v in run.variants.values() if v.exports]
    if not variants:
        return
    doc.section("Quality per export format")
    doc.para("Each export is loaded, sampled with the run's generate settings and scored like the training samples. "
             f"'{UNEXPORTED}' is the adapter on its base model as trained: the row every format should match. Size "
             f"counts what a user ships ({UNEXPORTED}: base weights + adapter). Cells: value [95% CI]. llama.cpp "
             "(GGUF) draws from other random streams than PyTorch, so compare the metrics, not the texts.", note=True)
    for v in variants:
        entries = list(v.exports.items())
        entries.sort(key=lambda ke: ke[0] != UNEXPORTED)  # stable: the rest keep their recorded order
        doc.heading(f"{v.name}: quality per export format")
        rows = []
        for name, e in entries:
            metrics = e.scores.metrics if e.scores else {}
            speed = e.generation.tokens_per_s if e.generation else None
            rows.append([name, fmt_bytes(e.bytes), fmt(e.load_s), fmt(speed),
                         *(fmt_metric(metrics.get(m)) for m in EXPORT_METRICS),
                         e.copy_analysis.verdict if e.copy_analysis else "-"])
        doc.table(["format", "file size", "load s", "generate tokens/s", "width consistency", "novelty",
                   "valid rate", "samples' verdict"], rows)
