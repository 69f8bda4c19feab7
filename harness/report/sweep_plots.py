"""A sweep's plots and report section: each outcome against each factor, and the memorization map.

Pure (no torch). The data of every plot is built first, as typed rows (`outcome_series`, `map_panels`), and
the figure is drawn from exactly those rows, so a test checks the data and that the figure shows it.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from harness.judge.verdict import RANKING_RULE, verdict_tier
from harness.report.doc import Doc, fmt
from harness.report.plots import COLORS, _plain_text, save_png
from harness.report.sweep import INTERVAL_RULE, OUTCOMES, Cell, Point, Sweep

MAP = "sweep-map.png"
# A verdict tier's fill (harness.judge.verdict.verdict_tier: 0 top, 1 middle, 2 bottom, 3 failed), light versions of
# the report's good/mid/bad colours so the words written on a cell stay readable.
TIER_FILL = {0: "#bfe3c6", 1: "#f7dd9f", 2: "#f2b8b5", 3: "#cfcfcf"}
TIER_NAMES = {0: "learning / novel", 1: "mixed / undertrained", 2: "memorizing / looping / noise / invalid",
              3: "failed"}
NOT_RUN = "#ffffff"
EMPTY = {"score": "not measured: no valid samples", "loss": "no loss curves"}


def outcomes_png(factor: int) -> str:
    """The file of the outcome plots against factor i."""
    return f"sweep-outcomes-{factor + 1}.png"


@dataclass
class Series:
    """One line of an outcome plot: the configurations at one level of every other factor, along one factor."""

    label: str  # the other factors' levels, "r 4" ("" in a sweep of one factor)
    x: list[float]  # the factor's values (a number axis) or level positions 0, 1, ...
    points: list[Point]  # one per x; Point() where that configuration was not run or has no value


def _x(sweep: Sweep, f: int) -> list[float]:
    factor = sweep.factors[f]
    return [float(lv[0]) for lv in factor.levels] if factor.numeric else list(range(len(factor.levels)))


def outcome_series(sweep: Sweep, f: int, key: str) -> list[Series]:
    """The lines of outcome `key` against factor f: one per combination of the other factors' levels."""
    others = [i for i in range(len(sweep.factors)) if i != f]
    by_level = {c.level: c for c in sweep.cells}
    out = []
    for combo in itertools.product(*(range(len(sweep.factors[i].levels)) for i in others)):
        points = []
        for j in range(len(sweep.factors[f].levels)):
            level = [0] * len(sweep.factors)
            level[f] = j
            for i, k in zip(others, combo, strict=True):
                level[i] = k
            cell = by_level.get(tuple(level))
            points.append(cell.outcomes[key] if cell else Point())
        label = ", ".join(sweep.factors[i].level_label(k) for i, k in zip(others, combo, strict=True))
        out.append(Series(label, _x(sweep, f), points))
    return out


@_plain_text
def plot_outcomes(sweep: Sweep, f: int, out_dir: Path) -> str:
    """Every outcome against factor f, one line per level of the other factors, with intervals and seed dots."""
    factor = sweep.factors[f]
    fig = Figure(figsize=(8.4, 5.0), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    handles = {}
    for ax, (key, label, kind) in zip(axes, OUTCOMES, strict=True):
        series = outcome_series(sweep, f, key)
        drawn = False
        xs = _x(sweep, f)
        log = factor.numeric and min(xs) > 0 and max(xs) / min(xs) >= 4
        for i, s in enumerate(series):
            # lines that would lie on one another side by side: a small offset, in the axis's own scale
            shift = (i - (len(series) - 1) / 2) * 0.025 * (math.log10(max(xs) / min(xs)) if log else max(xs) - min(xs))
            px = [(x * 10 ** shift if log else x + shift) for x, p in zip(s.x, s.points, strict=True)
                  if p.value is not None]
            ps = [p for p in s.points if p.value is not None]
            if not ps:
                continue
            drawn = True
            color = COLORS[i % len(COLORS)]
            lows = [p.value - p.low if p.low is not None else 0.0 for p in ps]
            highs = [p.high - p.value if p.high is not None else 0.0 for p in ps]
            bars = ax.errorbar(px, [p.value for p in ps], yerr=[lows, highs], fmt="o-", ms=4, lw=1.6, capsize=3,
                               color=color, label=s.label or key)
            handles.setdefault(s.label, bars)
            if sweep.seeds > 1:
                dots = [(x, v) for x, p in zip(px, ps, strict=True) for v in p.values]
                ax.plot([d[0] for d in dots], [d[1] for d in dots], ".", ms=5, alpha=0.45, color=color)
        if not drawn:
            what = "no configuration memorized" if key == "onset_step" else EMPTY[kind]
            ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#555")
            ax.set_yticks([])
        ax.set_title(label, fontsize=10)
        if log:
            ax.set_xscale("log")
        ax.set_xticks(xs, [factor.level_label(j, with_name=False) for j in range(len(xs))], fontsize=9)
        ax.minorticks_off()
        pad = (max(xs) / min(xs)) ** 0.12 if log else 0.12 * ((max(xs) - min(xs)) or 1)
        ax.set_xlim(*((min(xs) / pad, max(xs) * pad) if log else (min(xs) - pad, max(xs) + pad)))
        ax.margins(y=0.15)
        ax.tick_params(axis="y", labelsize=9)
        ax.set_xlabel(factor.label, fontsize=9)
        ax.grid(alpha=0.3)
    if len(handles) > 1 or any(handles):
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 4),
                   fontsize=9)
    fig.suptitle(f"Outcomes against {factor.label}" + (f", mean of {sweep.seeds} seeds" if sweep.seeds > 1 else ""),
                 fontsize=11)
    return save_png(fig, out_dir, outcomes_png(f))


@dataclass
class MapCell:
    """One configuration as the map writes it: its tier's colour and the lines written in it."""

    name: str
    tier: int | None  # harness.judge.verdict.verdict_tier of its (majority) verdict
    lines: list[str]  # verdict, the loss curves' verdict, onset, quality


@dataclass
class MapPanel:
    """One grid of the map: columns are the first factor's levels, rows the second's (one row in a 1-factor sweep)."""

    title: str  # the levels of any further factors, "" with two or fewer
    columns: list[str]
    rows: list[str]
    cells: list[list[MapCell | None]]  # [row][column]; None: not run


def map_cell(cell: Cell) -> MapCell:
    """A configuration's verdict (with its share over seeds), its loss curves' verdict, onset step(s) and quality."""
    onset = ("no onset" if not cell.onsets else f"onset {cell.onsets[0]}" if len(set(cell.onsets)) == 1
             else f"onset {min(cell.onsets)}-{max(cell.onsets)}")
    if cell.onsets and cell.agreement:
        onset += f" ({len(cell.onsets)}/{len(cell.replicates)})"
    verdict = cell.verdict + (f" {cell.agreement}" if cell.agreement else "")
    return MapCell(cell.name, verdict_tier(cell.verdict),
                   [verdict, f"loss curves: {cell.loss_verdict or '-'}", onset, f"quality {fmt(cell.quality)}"])


def map_panels(sweep: Sweep) -> list[MapPanel]:
    """The map's grids: the first factor across, the second down, one grid per level of any others."""
    fs = sweep.factors
    by_level = {c.level: c for c in sweep.cells}
    rows = range(len(fs[1].levels)) if len(fs) > 1 else [None]
    panels = []
    for rest in itertools.product(*(range(len(f.levels)) for f in fs[2:])):
        grid = []
        for r in rows:
            line = []
            for c in range(len(fs[0].levels)):
                cell = by_level.get((c, *(() if r is None else (r,)), *rest))
                line.append(map_cell(cell) if cell else None)
            grid.append(line)
        panels.append(MapPanel(", ".join(fs[2 + i].level_label(k) for i, k in enumerate(rest)),
                               [fs[0].level_label(c, with_name=False) for c in range(len(fs[0].levels))],
                               [fs[1].level_label(r, with_name=False) for r in rows] if len(fs) > 1 else [""], grid))
    return panels


@_plain_text
def plot_map(sweep: Sweep, out_dir: Path) -> str:
    """The memorization map: a grid per panel, each cell coloured by its verdict's tier, its words written in it."""
    panels = map_panels(sweep)
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    n_cols, n_rows = len(panels[0].columns), len(panels[0].rows)
    fig = Figure(figsize=(max(4.0, 1.45 * n_cols * ncols + 1.4), 1.1 * n_rows * nrows + 1.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes, panels, strict=False):
        for r, line in enumerate(panel.cells):
            for c, mc in enumerate(line):
                fill = NOT_RUN if mc is None else TIER_FILL.get(mc.tier, NOT_RUN)
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=fill, edgecolor="white", lw=2,
                                       hatch="//" if mc is None else None))
                ax.text(c, r, "not run" if mc is None else "\n".join(mc.lines), ha="center", va="center",
                        fontsize=8.5, color="#222", linespacing=1.35)
        ax.set_xlim(-0.5, n_cols - 0.5)
        ax.set_ylim(n_rows - 0.5, -0.5)  # the first level on top
        ax.set_xticks(range(n_cols), panel.columns, fontsize=9)
        ax.set_yticks(range(n_rows), panel.rows, fontsize=9)
        ax.set_xlabel(sweep.factors[0].label, fontsize=9)
        if len(sweep.factors) > 1:
            ax.set_ylabel(sweep.factors[1].label, fontsize=9)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        if panel.title:
            ax.set_title(panel.title, fontsize=10)
    tiers = sorted({mc.tier for p in panels for line in p.cells for mc in line
                    if mc is not None and mc.tier is not None})
    fig.legend([Patch(facecolor=TIER_FILL[t]) for t in tiers], [TIER_NAMES[t] for t in tiers],
               loc="outside lower center", ncols=2, fontsize=8.5)
    seeds = f" ({sweep.seeds} seeds)" if sweep.seeds > 1 else ""
    fig.suptitle(f"Memorization map: verdict, loss curves' verdict, onset step, quality{seeds}", fontsize=10)
    return save_png(fig, out_dir, MAP)


def plot_sweep(sweep: Sweep | None, out_dir: Path) -> list[str]:
    """The map and one outcome figure per factor; nothing for a run that is not a sweep."""
    if sweep is None:
        return []
    return [plot_map(sweep, out_dir), *(plot_outcomes(sweep, f, out_dir) for f in range(len(sweep.factors)))]


def _point(p: Point) -> str:
    if p.value is None:
        return "-"
    if p.low is None or p.high is None:
        return fmt(p.value)
    return f"{fmt(p.value)} [{fmt(p.low)}, {fmt(p.high)}]"


def section(doc: Doc, sweep: Sweep | None, run_dir: Path, images: list[str]) -> None:
    """The sweep section: the map, the configurations ranked with their outcomes, the outcome plots."""
    if sweep is None:
        return
    doc.section("Sweep")
    keys = ", ".join(k for f in sweep.factors for k in f.keys)
    doc.para(f"{len(sweep.cells)} configurations over {keys}" + (f", each run over {sweep.seeds} seeds"
             if sweep.seeds > 1 else "") + ". The map colours each by its verdict's tier and writes its "
             "memorization onset step and quality in it; the plots below draw each outcome against each key.",
             note=True)
    if MAP in images:
        doc.image(run_dir / MAP, "memorization map: verdict tier, onset step and quality per configuration")
    rows = []
    for i, c in enumerate(sweep.ranked(), 1):
        o = c.outcomes
        rows.append([i, *(f.level_label(j, with_name=False) for f, j in zip(sweep.factors, c.level, strict=True)),
                     c.verdict + (f" {c.agreement}" if c.agreement else ""), fmt(c.quality),
                     *(_point(o[key]) for key, _, _ in OUTCOMES)])
    doc.table(["rank", *(f.label for f in sweep.factors), "verdict", "quality", *(label for _, label, _ in OUTCOMES)],
              rows)
    doc.para(f"{RANKING_RULE} Over seeds: the majority verdict, the mean quality. {INTERVAL_RULE} The plots draw "
             "them as bars" + (", and each seed as a dot." if sweep.seeds > 1 else "."), note=True)
    for f, factor in enumerate(sweep.factors):
        if outcomes_png(f) in images:
            doc.image(run_dir / outcomes_png(f), f"outcomes against {factor.label}")
