"""PNG plots for run reports and comparisons (matplotlib Figure objects rendered by Agg; no torch).

Every function takes loaded results, writes PNGs atomically into a folder and returns the
file names it wrote (nothing when there is nothing to draw), so reports can embed them.
"""
from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib
from matplotlib.figure import Figure  # not pyplot: no global figure state, no GUI backend, PNG via Agg
from PIL import Image  # a matplotlib dependency

from harness.fsutil import atomic_write_bytes
from harness.judge.verdict import final_verdict
from harness.results import Metric, RunResult, VariantResult, read_samples, to_jsonable

HUMAN = "human reference"
HUMAN_COLOR = "#7f7f7f"
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
GIB = 1024 ** 3
P = ParamSpec("P")
R = TypeVar("R")


def _plain_text(fn: Callable[P, R]) -> Callable[P, R]:
    """Draw every label as plain text: a '$' in a variant name must not start math mode (or fail to parse)."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)
    return wrapper


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def save_png(fig: Figure, out_dir: Path, name: str) -> str:
    """Render to memory first so a crash never leaves half a PNG; a 128-colour palette keeps reports small."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    # Plots use a few flat colours: a palette without dithering looks the same at about a third of the bytes,
    # and Pillow writes no Software tag or date, so the same figure gives the same bytes.
    image = Image.open(buf).convert("RGB").quantize(128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(out_dir / name, buf.getvalue())
    return name


def _grid(n: int, ncols: int, cell: tuple[float, float]) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(cell[0] * ncols, cell[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def samples_of(run_dir: Path, variant: VariantResult) -> list[dict]:
    """A variant's samples, or [] when the file is missing or damaged (a report still shows the rest)."""
    try:
        return [s for s in read_samples(run_dir, variant) if isinstance(s, dict)]
    except (OSError, ValueError):
        return []


def metric_error(m: Metric) -> tuple[float, float] | None:
    """(below, above) error-bar lengths: the CI when stored, else one stderr, else None."""
    if m.value is None:
        return None
    if m.ci_low is not None and m.ci_high is not None:
        return max(0.0, m.value - m.ci_low), max(0.0, m.ci_high - m.value)
    if m.stderr is not None:
        return m.stderr, m.stderr
    return None


def metric_names(run: RunResult) -> list[str]:
    """Score metric names present in any variant or the human reference, in first-seen order."""
    names: list[str] = []
    sources = [v.scores for v in run.variants.values()] + [run.human_reference]
    for scores in sources:
        for name in scores.metrics:
            if name not in names:
                names.append(name)
    return names


@_plain_text
def plot_losses(run: RunResult, out_dir: Path) -> list[str]:
    """Train vs held-out loss per variant, with the memorization onset and held-out minimum marked."""
    variants = [v for v in run.variants.values() if v.curves.steps]
    if not variants:
        return []
    fig, axes = _grid(len(variants), 3, (4.6, 3.4))
    for ax, v in zip(axes, variants, strict=True):
        c = v.curves
        n = min(len(c.steps), len(c.train_loss), len(c.heldout_loss))  # a run in progress may be ragged
        ax.plot(c.steps[:n], c.train_loss[:n], "o-", ms=3, color=_color(0), label="train (probe)")
        ax.plot(c.steps[:n], c.heldout_loss[:n], "o-", ms=3, color=_color(1), label="held-out")
        la = v.loss_analysis
        if la is not None:
            ax.plot([la.heldout_min_step], [la.heldout_min], "*", ms=13, color="black", label="held-out minimum")
            if la.onset_step is not None:
                ax.axvline(la.onset_step, color=_color(3), ls="--", lw=1.5, label="memorization onset")
        ax.set_title(f"{v.name}: {final_verdict(v)}", fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Train vs held-out loss (memorization onset marked)")
    return [save_png(fig, out_dir, "loss-curves.png")]


@_plain_text
def plot_scores(run: RunResult, out_dir: Path) -> list[str]:
    """One bar chart per metric: each variant beside the human reference, with CI (or stderr) error bars."""
    names = metric_names(run)
    if not names:
        return []
    labels = [n for n, v in run.variants.items() if v.scores.metrics]
    labels += [HUMAN] if run.human_reference.metrics else []
    fig, axes = _grid(len(names), 4, (max(3.2, 0.55 * len(labels) + 1.4), 3.2))
    for ax, name in zip(axes, names, strict=True):
        higher, lowest = None, 0.0
        for i, label in enumerate(labels):
            scores = run.human_reference if label == HUMAN else run.variants[label].scores
            m = scores.metrics.get(name)
            if m is None or m.value is None:
                continue
            higher = m.higher_is_better
            err = metric_error(m)
            ax.bar(i, m.value, color=HUMAN_COLOR if label == HUMAN else _color(i),
                   hatch="//" if label == HUMAN else None, edgecolor="white",
                   yerr=[[err[0]], [err[1]]] if err else None, capsize=4, ecolor="black")
            # Print the value too: a zero bar is otherwise invisible.
            ax.annotate(f"{m.value:.3g}", (i, m.value), xytext=(6, 2), textcoords="offset points",
                        fontsize=7, color="#333")
            lowest = min(lowest, m.value)
        ax.margins(y=0.12)
        if lowest >= 0:
            ax.set_ylim(bottom=0)  # scores are rates; a CI whisker below zero is not worth an axis
        arrow = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
        ax.set_title(f"{name}{arrow}", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("value")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Scores per variant vs held-out human pieces (error bars: 95% CI, else ±1 stderr)")
    return [save_png(fig, out_dir, "scores.png")]


@_plain_text
def plot_novelty(run: RunResult, run_dir: Path, out_dir: Path) -> list[str]:
    """Histogram of per-sample novelty of the valid samples per variant, against the human reference's.

    Valid samples only, as the novelty metric itself: the novelty of prose or noise says nothing.
    """
    data = {name: [s["novelty"] for s in samples_of(run_dir, v) if s.get("novelty") is not None and s.get("valid")]
            for name, v in run.variants.items()}
    data = {k: v for k, v in data.items() if v}
    if not data:
        return []
    human = [s["novelty"] for s in run.human_reference.per_sample
             if s.get("novelty") is not None and s.get("valid", True)]
    human_m = run.human_reference.metrics.get("novelty") or Metric()
    bins = [i / 20 for i in range(21)]
    fig, axes = _grid(len(data), 3, (4.2, 3.0))
    for i, (ax, (name, values)) in enumerate(zip(axes, data.items(), strict=True)):
        ax.hist([min(1.0, max(0.0, x)) for x in values], bins=bins, color=_color(i), alpha=0.8, label=name)
        if human:
            ax.hist(human, bins=bins, histtype="step", lw=2, color=HUMAN_COLOR, label=HUMAN)
        elif human_m.value is not None:
            ax.axvline(human_m.value, color=HUMAN_COLOR, lw=2, ls="--", label=f"{HUMAN} mean")
            if human_m.ci_low is not None and human_m.ci_high is not None:
                ax.axvspan(human_m.ci_low, human_m.ci_high, color=HUMAN_COLOR, alpha=0.15)
        ax.set_xlim(0, 1)
        ax.set_title(f"{name} (n={len(values)} valid)", fontsize=10)
        ax.set_xlabel("novelty (1 = unlike any training piece)")
        ax.set_ylabel("samples")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Novelty of generated samples vs held-out human pieces")
    return [save_png(fig, out_dir, "novelty.png")]


def _bench_points(run: RunResult) -> list[dict]:
    # Rendered through the points' JSON view: the raw worker files have the same shape.
    points = [to_jsonable(p) for p in run.bench.points] if run.bench else []
    return [p for p in points if p.get("backend")]


def is_workload(p: dict) -> bool:
    """A real-data workload point (the cats), not a synthetic grid point: it is not on the grid's lines."""
    return p.get("workload") not in (None, "", "synthetic") or "cats" in str(p.get("label") or "")


def point_name(p: dict) -> str:
    """A benchmark point's name: its label, else its workload, else b<batch>-s<seq>."""
    shape = f"b{p.get('batch_size')}-s{p.get('seq_len')}"
    if p.get("label"):
        return str(p["label"])
    return f"{p['workload']}-{shape}" if is_workload(p) else shape


def names_in_order(points: list[dict]) -> list[str]:
    """Grid points by (batch, seq len), then workload points: same order in every panel."""
    ordered = sorted(points, key=lambda p: (is_workload(p), p.get("batch_size") or 0, p.get("seq_len") or 0))
    return list(dict.fromkeys(point_name(p) for p in ordered))


def _speedups(points: list[dict]) -> tuple[str, str, list[tuple[str, float | None, str]]]:
    """(fast, base, [(point name, base_step_s / fast_step_s or None, note)]) for two backends, peft as base."""
    backends = sorted({p["backend"] for p in points})
    base = "peft" if "peft" in backends else backends[0]
    fast = next(b for b in backends if b != base)
    by = {(p["backend"], point_name(p)): p for p in points}
    rows = []
    for name in names_in_order(points):
        a, b = by.get((base, name)), by.get((fast, name))
        if not a or not b:
            rows.append((name, None, "missing"))
        elif a.get("status") != "ok" or b.get("status") != "ok":
            rows.append((name, None, f"{base} {a.get('status')}\n{fast} {b.get('status')}"))
        elif a.get("median_step_s") and b.get("median_step_s"):
            rows.append((name, a["median_step_s"] / b["median_step_s"], ""))
        else:
            rows.append((name, None, "no time"))
    return fast, base, rows


def _throughput(ax, points: list[dict], backends: list[str]) -> None:
    """Grid points only, as lines: colour = backend (as in the memory plot), marker and dash = batch size."""
    batches = sorted({p.get("batch_size") or 0 for p in points})
    for i, backend in enumerate(backends):
        for k, bs in enumerate(batches):
            pts = sorted((p for p in points if p["backend"] == backend and (p.get("batch_size") or 0) == bs),
                         key=lambda p: p.get("seq_len") or 0)
            ok = [p for p in pts if p.get("status") == "ok" and p.get("tokens_per_s")]
            style = "os^Dv"[k % 5] + ["-", "--", ":", "-."][k % 4]
            ax.plot([p["seq_len"] for p in ok], [p["tokens_per_s"] for p in ok], style, color=_color(i),
                    label=f"{backend} batch {bs}")
            bad = [p for p in pts if p.get("status") != "ok"]
            if bad:
                ax.plot([p.get("seq_len") or 0 for p in bad], [0] * len(bad), "x", ms=10, mew=2, color=_color(i),
                        label=f"{backend} batch {bs}: {'/'.join(sorted({str(p.get('status')) for p in bad}))}")
    seq_lens = sorted({p.get("seq_len") or 0 for p in points} - {0})
    ax.set_xscale("log", base=2)
    ax.set_xticks(seq_lens, [str(s) for s in seq_lens])
    ax.minorticks_off()
    ax.margins(y=0.08)
    ax.set_ylim(bottom=0)  # after the margins, which then only pad the top
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("training tokens / s")
    ax.set_title("Throughput vs sequence length (synthetic rows)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _workload(ax, points: list[dict], backends: list[str]) -> None:
    """Real-data workload points as their own bars: their rows are real pieces, not one more grid length."""
    names = names_in_order(points)
    by = {(p["backend"], point_name(p)): p for p in points}
    width = 0.8 / len(backends)
    for j, backend in enumerate(backends):
        for k, name in enumerate(names):
            p = by.get((backend, name))
            if not p:
                continue
            x = k + (j - (len(backends) - 1) / 2) * width
            ok = p.get("status") == "ok" and p.get("tokens_per_s")
            ax.bar(x, p["tokens_per_s"] if ok else 0, width, color=_color(j), hatch="//", edgecolor="white")
            value = f"{p['tokens_per_s']:,.0f}" if ok else str(p.get("status")).upper()
            ax.annotate(f"{backend}\n{value}", (x, p["tokens_per_s"] if ok else 0), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")
    ticks = []
    for p in (next(q for q in points if point_name(q) == name) for name in names):
        accum = f" x {p['grad_accum']} accum" if (p.get("grad_accum") or 1) > 1 else ""
        ticks.append(f"{point_name(p)}\nbatch {p.get('batch_size')}{accum}\n~{p.get('seq_len')} real tokens/row")
    ax.set_xticks(range(len(names)), ticks, fontsize=8)
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.margins(y=0.15)
    ax.set_ylabel("training tokens / s")
    ax.set_title("Real workload")
    ax.grid(axis="y", alpha=0.3)


@_plain_text
def plot_bench(run: RunResult, out_dir: Path) -> list[str]:
    """Benchmark plots, when present: tokens/s vs sequence length, speed-up per point, peak memory."""
    points = [p for p in _bench_points(run) if p.get("seq_len") and p.get("batch_size")]
    if not points:
        return []
    written = []
    backends = sorted({p["backend"] for p in points})
    two = len(backends) >= 2
    # A QLoRA grid (model.load_in_4bit) must not pass for a bf16 one when the two PNGs sit side by side.
    quant = "base model in 4-bit (NF4, QLoRA)" if (run.bench.settings or {}).get("load_in_4bit") else ""
    grid, work = [p for p in points if not is_workload(p)], [p for p in points if is_workload(p)]
    ratios = ([3] if grid else []) + ([1.2] if work else []) + ([3] if two else [])
    fig = Figure(figsize=(4.6 * sum(ratios) / 3 + 1, 4.2), layout="constrained")
    axes = list(fig.subplots(1, len(ratios), squeeze=False, width_ratios=ratios)[0])
    if grid:
        _throughput(axes.pop(0), grid, backends)
    if work:
        _workload(axes.pop(0), work, backends)
    if two:
        fast, base, rows = _speedups(points)
        work_names = {point_name(p) for p in work}
        ax = axes.pop(0)
        xs = range(len(rows))
        ax.bar(xs, [r[1] or 0 for r in rows], color=[_color(2) if (r[1] or 0) >= 1 else _color(3) for r in rows],
               hatch=["//" if r[0] in work_names else None for r in rows], edgecolor="white")
        for x, (_, value, note) in zip(xs, rows, strict=True):
            ax.annotate(f"{value:.2f}x" if value else note, (x, value or 0), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
        n_grid = sum(r[0] not in work_names for r in rows)
        if 0 < n_grid < len(rows):  # the real workload is not one more grid point: set it apart
            ax.axvline(n_grid - 0.5, color="#666", ls="--", lw=1)
        ax.axhline(1.0, color="black", lw=1)
        ax.margins(y=0.1)
        pad = max(0.0, (3 - len(rows)) / 2)  # one or two bars stay bar-width, centred
        ax.set_xlim(-0.6 - pad, len(rows) - 0.4 + pad)
        ax.set_xticks(list(xs), [r[0] for r in rows], fontsize=8, rotation=30, ha="right")
        ax.set_xlabel("benchmark point")
        ax.set_ylabel(f"speed-up ({base} step time / {fast} step time)")
        ax.set_title(f"{fast} speed-up over {base}")
        ax.grid(axis="y", alpha=0.3)
    if quant:
        fig.suptitle(quant)
    written.append(save_png(fig, out_dir, "bench-speed.png"))

    names = names_in_order(points)
    by = {(p["backend"], point_name(p)): p for p in points}
    fig = Figure(figsize=(max(6.0, 0.55 * len(names) * len(backends) + 2), 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(backends)
    for j, backend in enumerate(backends):
        xs = [k + (j - (len(backends) - 1) / 2) * width for k in range(len(names))]
        got = [by.get((backend, name), {}) for name in names]
        ax.bar(xs, [(p.get("peak_reserved_bytes") or 0) / GIB for p in got], width, color=_color(j), alpha=0.35,
               label=f"{backend} reserved")
        ax.bar(xs, [(p.get("peak_allocated_bytes") or 0) / GIB for p in got], width * 0.5, color=_color(j),
               label=f"{backend} allocated")
        for x, p in zip(xs, got, strict=True):
            if p and p.get("status") != "ok":
                ax.annotate(str(p.get("status")).upper(), (x, (p.get("peak_reserved_bytes") or 0) / GIB),
                            ha="center", va="bottom", fontsize=9, color=_color(3), fontweight="bold")
    n_grid = len({point_name(p) for p in grid})
    if 0 < n_grid < len(names):
        ax.axvline(n_grid - 0.5, color="#666", ls="--", lw=1)
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=30 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center")
    ax.set_xlabel("benchmark point")
    ax.set_ylabel("peak GPU memory (GiB)")
    ax.set_title("Peak GPU memory per benchmark point" + (f", {quant}" if quant else ""))
    ax.grid(axis="y", alpha=0.3)
    pad = max(0.0, (3 - len(names)) / 2)
    ax.set_xlim(-0.6 - pad, len(names) - 0.4 + pad)
    fig.legend(fontsize=8, ncols=2 * len(backends), loc="outside lower center")  # below: never over a bar
    written.append(save_png(fig, out_dir, "bench-memory.png"))
    return written


def plot_run(run: RunResult, run_dir: str | Path, out_dir: str | Path | None = None) -> list[str]:
    """Every plot for one run; returns the PNG file names written into out_dir (default run_dir)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir
    return [*plot_losses(run, out), *plot_scores(run, out), *plot_novelty(run, run_dir, out), *plot_bench(run, out)]


@_plain_text
def plot_comparison(labels: list[str], values: dict[str, dict[str, list[Metric | None]]], out_dir: str | Path,
                    name: str = "compare-scores.png") -> list[str]:
    """Grouped bars per metric: values[metric][variant] holds one metric dict (or None) per run label."""
    metrics = [m for m, per in values.items() if any(x for runs in per.values() for x in runs)]
    if not metrics:
        return []
    n_var = max(len(values[m]) for m in metrics)
    fig, axes = _grid(len(metrics), 3, (max(4.0, 0.9 * n_var * len(labels) / 2 + 1.5), 3.2))
    width = 0.8 / len(labels)
    handles: dict[str, object] = {}
    for ax, metric in zip(axes, metrics, strict=True):
        variants, higher, lowest = list(values[metric]), None, 0.0
        for j, label in enumerate(labels):
            for k, variant in enumerate(variants):
                m = values[metric][variant][j]
                if m is None or m.value is None:
                    continue
                err = metric_error(m)
                bars = ax.bar(k + (j - (len(labels) - 1) / 2) * width, m.value, width, color=_color(j),
                              yerr=[[err[0]], [err[1]]] if err else None, capsize=3, ecolor="black")
                handles.setdefault(label, bars)
                higher = m.higher_is_better
                lowest = min(lowest, m.value)
        if lowest >= 0:
            ax.set_ylim(bottom=0)
        ax.set_xticks(range(len(variants)), variants, rotation=20, ha="right", fontsize=8)
        arrow = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
        ax.set_title(metric + arrow, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    # One legend for the figure: a legend per panel would cover the bars.
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 6))
    fig.suptitle("Metrics per variant and run (error bars: 95% CI, else ±1 stderr)")
    return [save_png(fig, Path(out_dir), name)]
