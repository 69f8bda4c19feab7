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
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from harness.errors import UserError
from harness.fsutil import atomic_write_text
from harness.judge.seeds import describe
from harness.judge.verdict import RANKING_RULE, final_verdict, quality, rank
from harness.report.doc import Doc, fmt
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
        """One flat row per run."""
        return [run_row(run, path) for path, run in self.runs]


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
        path=path, seed_verdicts="; ".join(f"{name}: {describe(sm)}" for name, sm in run.seeds.items()))


def row_dicts(listing: Listing) -> list[dict]:
    """Rows as plain dicts in COLUMNS order (for JSON and CSV)."""
    return [asdict(r) for r in listing.rows()]


TABLE_HEADERS = ["run id", "date", "config", "variants", "best variant", "verdict", "quality", "valid", "novelty",
                 "copies", "held-out min", "device", "over seeds"]


def table_rows(listing: Listing) -> list[list[str]]:
    """The runs as text cells for a terminal table or a page (TABLE_HEADERS)."""
    out = []
    for r in listing.rows():
        failed = f" ({r.failed} failed)" if r.failed else ""
        out.append([r.run_id, (r.created or "-")[:16].replace("T", " "), r.config or "-",
                    f"{r.variants}{failed}", r.best_variant or "-", r.verdict or "-", fmt(r.quality),
                    fmt(r.valid_rate), fmt(r.novelty), fmt(r.copy_rate),
                    f"{fmt(r.heldout_min)} @ step {fmt(r.heldout_min_step)}" if r.heldout_min is not None else "-",
                    r.device, r.seed_verdicts or "-"])
    return out


def _warnings(listing: Listing) -> list[str]:
    """What makes runs hard to compare: other data, other devices (as lm-eval and pytest-benchmark flag)."""
    out = []
    data = {r.data_hash for r in listing.rows() if r.data_hash}
    devices = {r.device for r in listing.rows() if r.device and r.device != "-"}
    if len(data) > 1:
        out.append(f"These runs used {len(data)} different data sets (by content hash): compare their scores with "
                   "care, or with `asciitune compare`, which checks comparability.")
    if len(devices) > 1:
        out.append(f"These runs ran on {len(devices)} different devices ({', '.join(sorted(devices))}): losses "
                   "and scores may differ slightly between them; speeds are not comparable.")
    return out


def write_leaderboard(listing: Listing, out: str | Path) -> Path:
    """A page of every run and every variant ranked across runs; OUT is a folder (index.html + report.md) or a .html."""
    doc = Doc(f"asciitune runs under {listing.root}")
    doc.para(f"{len(listing.runs)} run(s) under {listing.root}"
             + (f"; {len(listing.skipped)} results file(s) skipped (listed at the end)." if listing.skipped else "."))
    for warning in _warnings(listing):
        doc.para(f"Warning: {warning}", note=True)
    doc.contents()
    doc.section("Leaderboard across runs")
    doc.para(RANKING_RULE + " Settings are each variant's differences from its own run's base config.", note=True)
    everything = [(path, run, v) for path, run in listing.runs for v in run.variants.values()]
    by_id = {id(v): (path, run) for path, run, v in everything}
    rows = []
    for i, v in enumerate(rank([v for _, _, v in everything]), 1):
        _, run = by_id[id(v)]
        la, ca = v.loss_analysis, v.copy_analysis
        rows.append([i, run.run_id, v.name, final_verdict(v), fmt(quality(v)), fmt(v.scores.value("valid_rate")),
                     fmt(v.scores.value("width_consistency")), fmt(v.scores.value("novelty")),
                     fmt(ca.evidence.copy_rate if ca else None), fmt(la.final_heldout_loss if la else None),
                     f"{Path(run.config_source).stem or '-'}: {settings(run, v)}"])
    doc.table(["rank", "run", "variant", "verdict", "quality", "valid_rate", "width_consistency", "novelty",
               "copy rate", "final held-out loss", "config: settings"], rows)
    doc.section("Runs")
    doc.para("One row per run: its best variant (first on its own leaderboard) and that variant's numbers.",
             note=True)
    doc.table(TABLE_HEADERS, table_rows(listing))
    if listing.skipped:
        doc.section("Skipped results files")
        doc.table(["results file", "why it was skipped"], [[s.path, s.reason] for s in listing.skipped])
    out = Path(out)
    if out.suffix.lower() in (".html", ".htm"):
        atomic_write_text(out.with_suffix(".md"), doc.render_md())
        return atomic_write_text(out, doc.render_html())
    out.mkdir(parents=True, exist_ok=True)
    return doc.write(out)
