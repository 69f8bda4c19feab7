"""Run reports: a self-contained `index.html` (no JS, no network, plots embedded) and `report.md`.

    asciitune report reports/runs/<run-id>     # or just the run id

Pure (no torch): works on results copied from any machine. Every string that comes from
results or samples is escaped exactly once, in :class:`Doc`, so art such as
``<script>`` or ``&`` shows as text and whitespace is kept.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from harness import plots, report_sections
from harness.fsutil import atomic_write_text
from harness.report_sections import fmt, fmt_bytes, fmt_mapping, fmt_metric
from harness.results import RunResult, VariantResult, load, resolve_run_dir

MAX_GALLERY = 12  # samples per variant in the gallery; the samples file keeps them all
QUALITY_METRICS = ("valid_rate", "width_consistency", "novelty")
RANKING_RULE = (
    "Ranking: variants are first put in tiers by their final memorization verdict - (1) learning or novel, "
    "(2) mixed (some copying) or undertrained, (3) memorizing or invalid (under half the samples valid), "
    "(4) failed or unscored - and within a tier sorted by quality = valid_rate x width_consistency x novelty "
    "(each 0-1, higher is better), ties going to the lower final held-out loss. The product means a variant "
    "that copies its training pieces (novelty near 0) or draws broken art (low validity or uneven line widths) "
    "cannot rank high on the strength of the others.")
GOOD = {"learning", "novel", "improvement", "ok", "done", "pass"}
BAD = {"memorizing", "invalid", "regression", "failed", "fail", "oom", "error"}
MIDDLE_TIER = ("mixed", "undertrained")
BOTTOM_TIER = ("memorizing", "invalid")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1280px;
 padding:1rem 2rem;color:#1d1d1f;background:#fff;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{margin-bottom:.4rem}nav a{margin-right:1rem}.note{color:#555;font-size:.92rem;max-width:70rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d0d0;padding:.25rem .55rem;text-align:left;vertical-align:top;white-space:nowrap}
td.long{white-space:normal;min-width:16rem}
th{background:#f3f3f5;white-space:normal}tr:nth-child(even) td{background:#fafafa}td.good{color:#116b2b;font-weight:600}
td.bad{color:#b00020;font-weight:600}img{max-width:100%;height:auto;border:1px solid #eee;margin:.5rem 0}
.pair{display:flex;flex-wrap:wrap;gap:1rem;margin:0 0 1.2rem;padding-bottom:1rem;border-bottom:1px dashed #ddd}
figure{margin:0;flex:1 1 24rem;min-width:0}figcaption{font-size:.85rem;color:#444;margin-bottom:.25rem}
pre.art{font-family:"DejaVu Sans Mono",Menlo,Consolas,"Liberation Mono",monospace;font-size:12px;line-height:1.15;
 white-space:pre;overflow-x:auto;background:#f7f7f9;border:1px solid #e3e3e8;padding:.5rem;margin:0;tab-size:8}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # a report never runs or fetches anything


def _cell_class(text: str) -> str:
    word = text.strip().lower()
    if word in GOOD or word in BAD:
        return ' class="good"' if word in GOOD else ' class="bad"'
    return ' class="long"' if len(text) > 40 else ""  # short cells stay on one line, long ones wrap


def _md_text(text: str) -> str:
    """Markdown inline text: HTML-escaped (renderers pass raw HTML through) and markup characters escaped."""
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", html.escape(str(text), quote=False)).replace("\n", " ")


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run in text, so the art cannot close it early."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _pre(text: str) -> str:
    # The HTML parser drops one newline right after <pre>: give it one, so art that starts
    # with a newline keeps it. A raw CR would be normalized away; a character reference keeps it.
    return '<pre class="art">\n' + html.escape(text, quote=True).replace("\r", "&#13;") + "</pre>"


class Doc:
    """Builds a report's HTML and Markdown side by side; every text argument is plain text, escaped here."""

    def __init__(self, title: str):
        self.title = title
        self.html: list[str] = []
        self.md: list[str] = [f"# {_md_text(title)}", ""]
        self.sections: list[tuple[str, str]] = []

    def section(self, text: str) -> None:
        """A top-level section, listed in the page's table of contents."""
        anchor = "s" + str(len(self.sections) + 1)
        self.sections.append((anchor, text))
        self.html.append(f'<h2 id="{anchor}">{html.escape(text)}</h2>')
        self.md += [f"## {_md_text(text)}", ""]

    def heading(self, text: str) -> None:
        """A sub-heading."""
        self.html.append(f"<h3>{html.escape(text)}</h3>")
        self.md += [f"### {_md_text(text)}", ""]

    def para(self, text: str, note: bool = False) -> None:
        """A paragraph of plain text."""
        self.html.append(f'<p{" class=note" if note else ""}>{html.escape(text)}</p>')
        # A paragraph starting with these would become a heading, quote or list.
        self.md += [re.sub(r"^([#>+-]|\d+\.)", r"\\\1", _md_text(text)), ""]

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        """A table of plain-text cells (verdict words are coloured in HTML)."""
        if not rows:
            return
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td{_cell_class(str(c))}>{html.escape(str(c))}</td>" for c in row)
                       + "</tr>" for row in rows)
        self.html.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>")
        self.md.append("| " + " | ".join(_md_text(h) for h in headers) + " |")
        self.md.append("|" + "---|" * len(headers))
        self.md += ["| " + " | ".join(_md_text(str(c)) or " " for c in row) + " |" for row in rows]
        self.md.append("")

    def image(self, path: Path, alt: str) -> None:
        """A PNG: embedded as a data URI in HTML (one file opens offline), linked by name in Markdown."""
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.html.append(f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></p>')
        self.md += [f"![{_md_text(alt)}]({path.name})", ""]

    def art_pair(self, left: tuple[str, str], right: tuple[str, str] | None) -> None:
        """Two (caption, art) pieces side by side, whitespace kept exactly."""
        figs = [p for p in (left, right) if p is not None]
        self.html.append('<div class="pair">' + "".join(
            f"<figure><figcaption>{html.escape(cap)}</figcaption>{_pre(art)}</figure>" for cap, art in figs) + "</div>")
        for cap, art in figs:
            fence = _fence(art)
            self.md += [f"*{_md_text(cap)}*", "", fence, art.rstrip("\n"), fence, ""]

    def render_html(self) -> str:
        """The complete, self-contained HTML page."""
        nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.sections)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n<nav>{nav}</nav>\n" + "\n".join(self.html) + "\n</body></html>\n")

    def render_md(self) -> str:
        """The Markdown twin of the page."""
        return "\n".join(self.md).rstrip("\n") + "\n"

    def write(self, out_dir: Path) -> Path:
        """Atomically write index.html and report.md into out_dir; returns the HTML path."""
        atomic_write_text(out_dir / "report.md", self.render_md())
        return atomic_write_text(out_dir / "index.html", self.render_html())


def final_verdict(v: VariantResult) -> str:
    """The combined memorization verdict, else the loss verdict, else the status."""
    if v.status == "failed":
        return "failed"
    return str((v.verdict or {}).get("verdict") or (v.loss_analysis or {}).get("verdict") or v.status or "unknown")


def metric(v: VariantResult, name: str) -> dict | None:
    """One score metric dict of a variant, if scored."""
    return (v.scores or {}).get("metrics", {}).get(name)


def quality(v: VariantResult) -> float | None:
    """valid_rate x width_consistency x novelty, or None when one is missing."""
    product = 1.0
    for name in QUALITY_METRICS:
        m = metric(v, name)
        if not m or m.get("value") is None:
            return None
        product *= m["value"]
    return product


def tier(v: VariantResult) -> int:
    """0 learning/novel, 1 mixed/undertrained, 2 memorizing/invalid, 3 failed or unscored (see RANKING_RULE)."""
    verdict = final_verdict(v).lower()
    if v.status == "failed" or quality(v) is None:
        return 3
    return 2 if verdict in BOTTOM_TIER else 1 if verdict in MIDDLE_TIER else 0


def rank(variants: list[VariantResult]) -> list[VariantResult]:
    """Variants in leaderboard order (RANKING_RULE)."""
    def key(v: VariantResult) -> tuple:
        loss = (v.loss_analysis or {}).get("final_heldout_loss")
        return tier(v), -(quality(v) or 0.0), loss if loss is not None else float("inf"), v.name
    return sorted(variants, key=key)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def settings(run: RunResult, v: VariantResult) -> str:
    """The config keys where a variant differs from the run's base config."""
    base, own = _flatten(run.base_config), _flatten(v.config)
    diff = [f"{k}={fmt_mapping(val)}" for k, val in own.items() if k in base and base[k] != val]
    return ", ".join(diff) or "(base config)"


def _header(doc: Doc, run: RunResult) -> None:
    env, data = run.environment or {}, run.data or {}
    doc.table(["field", "value"], [
        ["run id", run.run_id], ["created", run.created or "-"], ["command", run.command or "-"],
        ["config", f"{run.config_source or '-'} (hash {run.config_hash or '-'})"],
        ["data", f"{data.get('name', '-')} (hash {str(data.get('hash', '-'))[:16]}, "
                 f"{data.get('n_train', '-')} train / {data.get('n_heldout', '-')} held-out pieces)"],
        ["git commit", fmt_mapping(env.get("git_commit"))], ["device", fmt_mapping(env.get("device"))],
        ["machine", fmt_mapping(env.get("machine"))], ["versions", fmt_mapping(env.get("versions"))],
        ["schema version", run.schema_version]])


def _leaderboard(doc: Doc, run: RunResult) -> None:
    doc.section("Leaderboard")
    doc.para(RANKING_RULE + " Uncertainties are in the Scores table.", note=True)
    rows = []
    for i, v in enumerate(rank(list(run.variants.values())), 1):
        la = v.loss_analysis or {}
        rows.append([i, v.name, settings(run, v), final_verdict(v), fmt(quality(v)),
                     *(fmt_metric(metric(v, n), False) for n in (*QUALITY_METRICS, "exact_copy_rate")),
                     fmt(la.get("final_heldout_loss")), fmt(v.train.tokens_per_s or None),
                     fmt_bytes(v.train.peak_memory_bytes)])
    doc.table(["rank", "variant", "settings", "verdict", "quality", *QUALITY_METRICS, "exact_copy_rate",
               "final held-out loss", "train tokens/s", "peak memory"], rows)
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
        la, ca = v.loss_analysis or {}, v.copy_analysis or {}
        rows.append([v.name, final_verdict(v), la.get("verdict", "-"), ca.get("verdict", "-"),
                     fmt((ca.get("evidence") or {}).get("copy_rate")),
                     f"{fmt(la['heldout_min'])} @ step {fmt(la.get('heldout_min_step'))}"
                     if la.get("heldout_min") is not None else "-",
                     fmt(la.get("onset_step")), fmt(la.get("final_gap")), fmt(la.get("final_ratio")),
                     fmt_metric(metric(v, "exact_copy_rate"), False), fmt_metric(metric(v, "near_copy_rate"), False)])
        for source in (v.verdict or {}, la, ca):
            if source.get("rule") and source["rule"] not in rules:
                rules.append(source["rule"])
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
    cols = [v for v in run.variants.values() if (v.scores or {}).get("metrics")]
    rows = []
    for name in names:
        hib = next((m.get("higher_is_better") for m in [metric(v, name) for v in cols]
                    + [run.human_reference.get("metrics", {}).get(name)] if m), None)
        arrow = "" if hib is None else (" (higher better)" if hib else " (lower better)")
        rows.append([name + arrow, *(fmt_metric(metric(v, name)) for v in cols),
                     fmt_metric(run.human_reference.get("metrics", {}).get(name))])
    doc.table(["metric", *(v.name for v in cols), plots.HUMAN], rows)


def _cost(doc: Doc, run: RunResult) -> None:
    doc.section("Training and generation cost")
    rows = []
    for v in (v for v in run.variants.values() if v.status != "failed"):
        t, g = v.train, v.generation or {}
        rows.append([v.name, v.backend or "-", v.backend_note or "-", v.device or "-", fmt(t.steps), fmt(t.epochs),
                     fmt(t.seconds), fmt(t.tokens_per_s), f"{fmt_bytes(t.peak_memory_bytes)} {t.peak_memory_kind}",
                     fmt(t.trainable_parameters), fmt(g.get("n")), fmt(g.get("tokens_per_s"))])
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
            flags = [f for f, on in (("exact copy", s.get("exact_copy")), ("near copy", s.get("near_copy")),
                                     ("cut off", s.get("cut_off")), ("invalid", s.get("valid") is False)) if on]
            cap = (f"sample {s.get('index', '?')}: novelty {fmt(s.get('novelty'))}, width consistency "
                   f"{fmt(s.get('width_consistency'))}" + (f" ({', '.join(flags)})" if flags else ""))
            nearest = s.get("nearest_train_text")
            right = None if nearest is None else (
                f"nearest training piece #{s.get('nearest_train_index', '?')}: similarity {fmt(s.get('similarity'))}",
                str(nearest))
            doc.art_pair((cap, str(s.get("text", ""))), right)


def write_report(run_dir: str | Path) -> Path:
    """Write plots, index.html and report.md into a run folder; returns the index.html path."""
    run_dir = resolve_run_dir(run_dir)
    run = load(run_dir)
    images = plots.plot_run(run, run_dir)
    doc = Doc(f"asciitune run {run.run_id}")
    _header(doc, run)
    if run.variants:  # a benchmark-only run has no variants: no empty leaderboard, cost or gallery
        _leaderboard(doc, run)
        _memorization(doc, run)
        _image(doc, run_dir, images, "loss-curves.png", "train vs held-out loss per variant")
        _scores(doc, run)
        _image(doc, run_dir, images, "scores.png", "scores per variant with uncertainty")
        _image(doc, run_dir, images, "novelty.png", "novelty histograms")
        _cost(doc, run)
        report_sections.exports(doc, run)
    report_sections.bench(doc, run)
    _image(doc, run_dir, images, "bench-speed.png", "benchmark throughput, real workload and speed-up")
    _image(doc, run_dir, images, "bench-memory.png", "benchmark peak memory")
    if run.variants:
        _gallery(doc, run, run_dir)
    return doc.write(run_dir)
