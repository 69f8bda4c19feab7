"""Every run under a reports folder: one flat row per run, and a leaderboard page across runs.

    asciitune runs                                # a table of every results.json under reports/
    asciitune runs --csv > runs.csv               # pandas.read_csv("runs.csv"): one row per run, flat columns
    asciitune runs --html reports/leaderboard     # index.html + report.md: runs and every variant ranked

Pure (no torch). The best variant of a run is the first of harness.judge.verdict.rank; nothing here
re-derives a verdict. A results.json of another schema version, or one that does not parse, is listed
as skipped with the reason: one old file must not hide every other run.
"""
from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.errors import UserError
from harness.fsutil import atomic_write_text
from harness.judge.seeds import describe
from harness.judge.verdict import RANKING_RULE, final_verdict, quality, rank
from harness.report.doc import Doc, Link, fmt, fmt_apart
from harness.report.run import settings
from harness.report.story import device_name
from harness.results import RESULTS_FILE, SCHEMA_VERSION, RunResult, VariantResult, from_dict


@dataclass
class RunRow:
    """One run as flat columns (numbers stay numbers, None where unmeasured): what --json and --csv print."""

    run_id: str
    created: str
    config: str  # the config file's name, e.g. "default"
    config_hash: str
    data: str
    data_hash: str
    device: str
    variants: int
    variant_names: str  # comma-separated, in the config's order
    failed: int
    best_variant: str | None
    verdict: str | None
    quality: float | None
    valid_rate: float | None
    width_consistency: float | None
    novelty: float | None
    copy_rate: float | None  # the copy rule's: exact or near copies, over all samples
    heldout_min: float | None
    heldout_min_step: int | None
    final_heldout_loss: float | None
    train_drop: float | None  # relative fall of the train loss from step 0
    path: str  # the run folder, relative to the reports folder
    # variants run over several seeds: "learn: learning 4/5 (memorizing 1/5); ..." (harness.judge.seeds)
    seed_verdicts: str = ""
    overrides: str = ""  # what the command line changed in the config: "train.lr=1e-4 model.backend=peft"
    report: str = ""  # the run's index.html, relative to the reports folder; "" before `asciitune report` wrote it


COLUMNS = [f.name for f in fields(RunRow)]


@dataclass
class Skipped:
    """A results.json that could not be read as a run of this schema, and why."""

    path: str
    reason: str


@dataclass
class Listing:
    """The runs found under a reports folder (oldest first) and the files skipped."""

    root: Path
    runs: list[tuple[str, RunResult]]  # (run folder relative to root, results)
    skipped: list[Skipped]

    def rows(self) -> list[RunRow]:
        """One flat row per run, with its report where one was written."""
        rows = [run_row(run, path) for path, run in self.runs]
        for r in rows:
            if (self.root / r.path / "index.html").is_file():
                r.report = str(Path(r.path) / "index.html")
        return rows


def _read(path: Path) -> RunResult:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"not readable as JSON ({exc})") from None
    if not isinstance(data, dict) or "run_id" not in data:
        raise UserError("not a results file (no run_id)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"schema version {data.get('schema_version')}, but this asciitune reads {SCHEMA_VERSION}: "
                        "re-run it, or list it with the asciitune that wrote it")
    try:
        return from_dict(data)
    except (TypeError, ValueError) as exc:  # UserError is one; anything else a damaged file throws is too
        raise UserError(str(exc)) from None


def scan(reports_dir: str | Path) -> Listing:
    """Every results.json under reports_dir (any depth), read; the unreadable ones listed with the reason."""
    root = Path(reports_dir)
    runs, skipped = [], []
    for path in sorted(root.rglob(RESULTS_FILE)) if root.is_dir() else []:
        where = str(path.parent.relative_to(root)) if path.parent != root else "."
        try:
            runs.append((where, _read(path)))
        except UserError as exc:
            skipped.append(Skipped(str(path.relative_to(root)), str(exc)))
    runs.sort(key=lambda item: (item[1].created, item[1].run_id))
    return Listing(root, runs, skipped)


def best_variant(run: RunResult) -> VariantResult | None:
    """The first variant of the run's leaderboard (harness.judge.verdict.rank), or None without variants."""
    ranked = rank(list(run.variants.values()))
    return ranked[0] if ranked else None


# A config override on a command line, and the flags that are shorthands for one (harness.cli.common.load_plan)
_OVERRIDE = re.compile(r"^[a-z_]+\.[a-z_0-9]+=")
_SHORTHANDS = {"--backend": "model.backend", "--model": "model.name", "--seeds": "train.seeds"}


def overrides_of(command: str) -> str:
    """The config overrides a run's command line gave (section.key=value, --backend, --model, --seeds), in order."""
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote in a recorded command: plain words
        words = command.split()
    out, i = [], 0
    while i < len(words):
        word = words[i]
        flag, eq, value = word.partition("=")
        if _OVERRIDE.match(word):
            out.append(word)
        elif flag in _SHORTHANDS and eq:
            out.append(f"{_SHORTHANDS[flag]}={value}")
        elif word in _SHORTHANDS and i + 1 < len(words):
            out.append(f"{_SHORTHANDS[word]}={words[i + 1]}")
            i += 1
        i += 1
    return " ".join(out)


def short_device(name: str) -> str:
    """A device name in a few characters: "CPU", "H100", "H200 x2" (from "NVIDIA H200 x2", "CPU (x86_64, ...)")."""
    count = re.search(r" (x\d+)$", name)
    base = name[: count.start()] if count else name
    if base.upper().startswith("CPU"):
        short = "CPU"
    else:
        words = [w for w in re.split(r"[\s-]+", base) if w and w.upper() not in ("NVIDIA", "GEFORCE", "TESLA")]
        short = words[0] if words else base
    return short + (f" {count.group(1)}" if count else "")


def run_row(run: RunResult, path: str = "") -> RunRow:
    """A run's flat row: who it was, and its best variant's verdict and key numbers."""
    best = best_variant(run)
    la = best.loss_analysis if best else None
    ca = best.copy_analysis if best else None
    scores = best.scores if best else None
    data = run.data or {}
    return RunRow(
        run_id=run.run_id, created=run.created, config=Path(run.config_source).stem if run.config_source else "",
        config_hash=run.config_hash, data=str(data.get("name", "")), data_hash=str(data.get("hash", ""))[:16],
        device=device_name(run.environment), variants=len(run.variants), variant_names=", ".join(run.variants),
        failed=sum(v.status == "failed" for v in run.variants.values()),
        best_variant=best.name if best else None, verdict=final_verdict(best) if best else None,
        quality=quality(best) if best else None,
        valid_rate=scores.value("valid_rate") if scores else None,
        width_consistency=scores.value("width_consistency") if scores else None,
        novelty=scores.value("novelty") if scores else None,
        copy_rate=ca.evidence.copy_rate if ca else (scores.value("exact_copy_rate") if scores else None),
        heldout_min=la.heldout_min if la else None, heldout_min_step=la.heldout_min_step if la else None,
        final_heldout_loss=la.final_heldout_loss if la else None, train_drop=la.train_drop if la else None,
        path=path, seed_verdicts="; ".join(f"{name}: {describe(sm)}" for name, sm in run.seeds.items()),
        overrides=overrides_of(run.command or ""))


def row_dicts(listing: Listing) -> list[dict]:
    """Rows as plain dicts in COLUMNS order (for JSON and CSV)."""
    return [asdict(r) for r in listing.rows()]


@dataclass(frozen=True)
class Column:
    """One column of the runs table: its header, its cell, and how long it stays when the table must narrow."""

    header: str
    cell: Callable[[Any, str], str]  # (row: a RunRow, or a VariantRow, its data label) -> text
    keep: int  # the table drops the lowest first to fit the terminal; 0: only with --wide (and on the page)
    no_wrap: bool = False  # never wraps: run ids, which a reader copies into the next command
    # a number: printed with as many digits as tell the runs' unequal values apart (fmt_apart), not the cell
    number: Callable[[Any], float | None] | None = None


def config_label(r: RunRow) -> str:
    """The config's name and the command line's overrides: "tiny train.lr=1e-4"."""
    return " ".join(x for x in (r.config or "-", r.overrides) if x)


def _verdict(r: RunRow) -> str:
    return (r.verdict or "-") + (f"; {r.failed} failed" if r.failed else "")


def _heldout(r: RunRow) -> str:
    return f"{fmt(r.heldout_min)} @ step {fmt(r.heldout_min_step)}" if r.heldout_min is not None else "-"


# A column is a function of a row: the per-variant table (harness.report.variant_rows) declares its own the same way.
COLUMNS_TABLE = [
    Column("run", lambda r, d: r.run_id, 100, no_wrap=True),
    Column("date", lambda r, d: (r.created or "-")[:16].replace("T", " "), 0),
    Column("config", lambda r, d: config_label(r), 90),
    Column("data", lambda r, d: d, 70),
    Column("variants", lambda r, d: f"{r.variants}" + (f" ({r.failed} failed)" if r.failed else ""), 0),
    Column("best", lambda r, d: r.best_variant or "-", 80),
    Column("verdict", lambda r, d: _verdict(r), 95),
    Column("quality", lambda r, d: fmt(r.quality), 0, number=lambda r: r.quality),
    Column("valid", lambda r, d: fmt(r.valid_rate), 60, number=lambda r: r.valid_rate),
    Column("novelty", lambda r, d: fmt(r.novelty), 50, number=lambda r: r.novelty),
    Column("copies", lambda r, d: fmt(r.copy_rate), 0, number=lambda r: r.copy_rate),
    Column("held-out min", lambda r, d: fmt(r.heldout_min), 55, number=lambda r: r.heldout_min),
    Column("held-out min @ step", lambda r, d: _heldout(r), 0),
    Column("device", lambda r, d: short_device(r.device), 40),
    Column("over seeds", lambda r, d: r.seed_verdicts or "-", 30),
]
WIDE_ONLY = {"held-out min"}  # --wide shows "held-out min @ step" in its place


def data_labels(rows: list[RunRow]) -> dict[str, str]:
    """Per run (by its folder), its data source in a few words: the source's name (a path's last part), with its
    content hash where runs of one name used different data (cats at two max_piece_chars: "cats#22d0", "cats#9f1c")."""
    def name(r: RunRow) -> str:
        if not r.data:
            return "-"
        path = Path(r.data)
        return r.data if len(path.parts) <= 1 else path.name + ("/" if not path.suffix else "")

    hashes: dict[str, set[str]] = {}
    for r in rows:
        hashes.setdefault(name(r), set()).add(r.data_hash)
    return {r.path: name(r) + (f"#{r.data_hash[:4]}" if len(hashes[name(r)]) > 1 and r.data_hash else "")
            for r in rows}


def table_columns(listing: Listing, wide: bool = False) -> list[Column]:
    """The columns a table shows: every one with --wide, else the compact ones (a column of "-" only is left out)."""
    rows = listing.rows()
    cols = [c for c in COLUMNS_TABLE if (c.keep > 0 or wide) and not (wide and c.header in WIDE_ONLY)]
    if not any(r.seed_verdicts for r in rows):
        cols = [c for c in cols if c.header != "over seeds"]
    return cols


def table_rows(listing: Listing, columns: list[Column] | None = None) -> tuple[list[str], list[list[str]]]:
    """Headers and the runs as text cells, for a terminal table or a page (every column by default)."""
    rows = listing.rows()
    columns = columns if columns is not None else [c for c in COLUMNS_TABLE if c.header not in WIDE_ONLY]
    return cell_table(rows, columns, data_labels(rows))


def cell_table(rows: list[Any], columns: list[Column], labels: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (runs, or variants: harness.report.variant_rows) as text cells; labels: data per run path."""
    cells = [[c.cell(r, labels[r.path]) for c in columns] for r in rows]
    for k, c in enumerate(columns):  # 11.46 and 11.54 must not both read 11.5
        if c.number is not None:
            for row, text in zip(cells, fmt_apart(*(c.number(r) for r in rows)), strict=True):
                row[k] = text
    return [c.header for c in columns], cells


def data_sets(rows: list[RunRow]) -> list[str]:
    """Each data set the runs used: "cats#22d0 (hash 22d0ea565be32077): run-a, run-b"."""
    labels = data_labels(rows)
    used: dict[str, list[str]] = {}
    for r in rows:
        used.setdefault(f"{labels[r.path]} (hash {r.data_hash or '-'})", []).append(r.run_id)
    return [f"{label}: {', '.join(ids)}" for label, ids in used.items()]


def _warnings(listing: Listing) -> list[str]:
    """What makes runs hard to compare: other data, other devices (as lm-eval and pytest-benchmark flag)."""
    out = []
    rows = listing.rows()
    data = {r.data_hash for r in rows if r.data_hash}
    devices = {r.device for r in rows if r.device and r.device != "-"}
    if len(data) > 1:
        out.append(f"These runs used {len(data)} different data sets (by content hash): "
                   f"{'; '.join(data_sets([r for r in rows if r.data_hash]))}. Compare their scores with care, or "
                   "with `asciitune compare`, which checks comparability.")
    if len(devices) > 1:
        out.append(f"These runs ran on {len(devices)} different devices ({', '.join(sorted(devices))}): losses "
                   "and scores may differ slightly between them; speeds are not comparable.")
    return out


def _report_link(root: Path, r: RunRow, page_dir: Path) -> Link | str:
    """A link from the page to a run's report, relative to the page's folder; "no report" before one is written."""
    if not r.report:
        return "no report"
    href = os.path.relpath((root / r.report).resolve(), page_dir.resolve())
    return Link("report", quote(Path(href).as_posix()))


def write_leaderboard(listing: Listing, out: str | Path) -> Path:
    """A page of every run and every variant ranked across runs; OUT is a folder (index.html + report.md) or a .html
    file (and the .md beside it). Returns the HTML path."""
    out = Path(out)
    page_dir = out.parent if out.suffix.lower() in (".html", ".htm") else out
    rows = {r.path: r for r in listing.rows()}
    labels = data_labels(list(rows.values()))
    doc = Doc(f"asciitune runs under {listing.root}")
    doc.para(f"{len(listing.runs)} run(s) under {listing.root}"
             + (f"; {len(listing.skipped)} results file(s) skipped (listed at the end)." if listing.skipped else "."))
    for warning in _warnings(listing):
        doc.para(f"Warning: {warning}", note=True)
    doc.contents()
    doc.section("Leaderboard across runs")
    doc.para(RANKING_RULE + " Config: the run's config and the overrides its command line gave; settings: each "
             "variant's differences from its own run's base config.", note=True)
    everything = [(path, run, v) for path, run in listing.runs for v in run.variants.values()]
    by_id = {id(v): (path, run) for path, run, v in everything}
    table = []
    for i, v in enumerate(rank([v for _, _, v in everything]), 1):
        path, run = by_id[id(v)]
        la, ca, r = v.loss_analysis, v.copy_analysis, rows[path]
        table.append([i, run.run_id, v.name, final_verdict(v), fmt(quality(v)), fmt(v.scores.value("valid_rate")),
                      fmt(v.scores.value("width_consistency")), fmt(v.scores.value("novelty")),
                      fmt(ca.evidence.copy_rate if ca else None), fmt(la.final_heldout_loss if la else None),
                      labels[path], config_label(r), settings(run, v), _report_link(listing.root, r, page_dir)])
    doc.table(["rank", "run", "variant", "verdict", "quality", "valid_rate", "width_consistency", "novelty",
               "copy rate", "final held-out loss", "data", "config", "settings", "report"], table)
    doc.section("Runs")
    doc.para("One row per run: its best variant (first on its own leaderboard) and that variant's numbers.",
             note=True)
    headers, cells = table_rows(listing)
    doc.table([*headers, "report"], [[*c, _report_link(listing.root, r, page_dir)]
                                     for c, r in zip(cells, rows.values(), strict=True)])
    if listing.skipped:
        doc.section("Skipped results files")
        doc.table(["results file", "why it was skipped"], [[s.path, s.reason] for s in listing.skipped])
    if out.suffix.lower() in (".html", ".htm"):
        atomic_write_text(out.with_suffix(".md"), doc.render_md())
        return atomic_write_text(out, doc.render_html())
    out.mkdir(parents=True, exist_ok=True)
    return doc.write(out)
