"""The report document: HTML and Markdown built side by side, every string escaped once; number formats.

Pure (no torch). Every text argument is plain text; :class:`Doc` escapes it exactly once, so art
such as ``<script>`` or ``&`` shows as text and whitespace is kept.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.fsutil import atomic_write_text
from harness.judge.verdict import tone
from harness.results import Metric

# Status words of commands and the gate (verdict words are coloured by harness.judge.verdict.tone)
GOOD_STATUS = {"improvement", "ok", "done", "pass", "passed"}
BAD_STATUS = {"regression", "fail", "oom", "error"}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1280px;
 padding:.5rem 2rem 1rem;color:#1d1d1f;background:#fff;line-height:1.45;box-sizing:border-box}
h1{font-size:1.5rem;margin:.3rem 0 .2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{margin-bottom:.4rem}nav{margin:.6rem 0}nav a{margin-right:1rem}.note{color:#555;font-size:.92rem;max-width:70rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d0d0;padding:.25rem .45rem;text-align:left;vertical-align:top}
td.long{min-width:16rem;overflow-wrap:anywhere}
th{background:#f3f3f5}tr:nth-child(even) td{background:#fafafa}.good{color:#116b2b;font-weight:600}
.bad{color:#b00020;font-weight:600}
.badge{background:#b00020;color:#fff;font-weight:600;border-radius:3px;padding:0 4px}.mid{color:#8a5a00;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5rem 0}
.pair{display:flex;flex-wrap:wrap;gap:1rem;margin:0 0 1.2rem;padding-bottom:1rem;border-bottom:1px dashed #ddd}
figure{margin:0;flex:1 1 24rem;min-width:0}figcaption{font-size:.85rem;color:#444;margin-bottom:.25rem}
pre.art{font-family:"DejaVu Sans Mono",Menlo,Consolas,"Liberation Mono",monospace;font-size:12px;line-height:1.15;
 white-space:pre;overflow-x:auto;background:#f7f7f9;border:1px solid #e3e3e8;padding:.5rem;margin:0;tab-size:8}
.story .top{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1rem;align-items:start}
.story .top img{margin:0}.story p{margin:.2rem 0}.story .note{font-size:.85rem;max-width:none}
.story .answer p{border-left:4px solid #1f77b4;background:#f3f7fb;padding:.25rem .5rem;margin:.35rem 0;font-weight:600}
ul.sentences{margin:.3rem 0;padding-left:1.1rem;font-size:.93rem}ul.sentences li{margin:.25rem 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(22rem,1fr));gap:.6rem;margin-top:.4rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.3rem .5rem;min-width:0}
.card h3{margin:0 0 .2rem;font-size:.95rem}.card p{margin:.2rem 0;font-size:.85rem}
.card .pair{flex-wrap:nowrap;gap:.4rem;margin:0 0 .3rem;padding-bottom:.3rem}.card figure{flex:1 1 0}
.card figcaption{font-size:.75rem;line-height:1.2;margin-bottom:.1rem}
.card pre.art{font-size:10px;max-height:8.5em;overflow:auto;padding:.25rem}
"""
_NAV = "<!--asciitune:contents-->"  # where render_html puts the table of contents (no escaped text can equal it)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # a report never runs or fetches anything


def word_class(text: str) -> str:
    """The colour class of a verdict or status word: good, bad, mid (mixed, undertrained), or ''."""
    word = text.strip().lower()
    return "good" if word in GOOD_STATUS else "bad" if word in BAD_STATUS else tone(text)


def _cell_class(text: str) -> str:
    cls = word_class(text)
    if cls:
        return f' class="{cls}"'
    # Cells wrap only where a table would not fit the page otherwise; long ones get room and may break anywhere.
    return ' class="long"' if len(text) > 40 else ""


def _md_text(text: str) -> str:
    """Markdown inline text that reads as plain text too: markup characters backslash-escaped, and only the `<` that
    would open raw HTML or an autolink (before a letter, '/', '!' or '?') and the `&` that would start an entity,
    so a rule's ">= 5%" and "< 50%" stay as they are in report.md, while "<script>" still renders as text."""
    text = re.sub(r"([\\`*_\[\]|])", r"\\\1", str(text))
    text = re.sub(r"<(?=[A-Za-z/!?])", r"\\<", text)
    return re.sub(r"&(?=#?\w+;)", r"\\&", text).replace("\n", " ")


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run in text, so the art cannot close it early."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _pre(text: str) -> str:
    # The HTML parser drops one newline right after <pre>: give it one, so art that starts
    # with a newline keeps it. A raw CR would be normalized away; a character reference keeps it.
    return '<pre class="art">\n' + html.escape(text, quote=True).replace("\r", "&#13;") + "</pre>"


@dataclass(frozen=True)
class Link:
    """A table cell that links elsewhere: its text is escaped like any cell, its href must come URL-quoted."""

    text: str
    href: str

    def __str__(self) -> str:
        return self.text


def _cell_html(c: Any) -> str:
    if isinstance(c, Link):
        return f'<td><a href="{html.escape(c.href, quote=True)}">{html.escape(c.text)}</a></td>'
    return f"<td{_cell_class(str(c))}>{html.escape(str(c))}</td>"


def _cell_md(c: Any) -> str:
    if isinstance(c, Link):  # a quoted href holds no space or parenthesis to end the link early
        return f"[{_md_text(c.text)}]({c.href.replace('(', '%28').replace(')', '%29')})"
    return _md_text(str(c)) or " "


class Doc:
    """Builds a report's HTML and Markdown side by side; every text argument is plain text, escaped here."""

    def __init__(self, title: str):
        self.title = title
        self.html: list[str] = []
        self.md: list[str] = [f"# {_md_text(title)}", ""]
        self.sections: list[tuple[str, str]] = []
        self._open: list[str] = []

    def begin(self, cls: str, id: str = "") -> None:
        """Open an HTML block (layout only: Markdown has no boxes); close it with end()."""
        tag = "section" if id else "div"
        self._open.append(tag)
        ident = f' id="{html.escape(id)}"' if id else ""
        self.html.append(f'<{tag}{ident} class="{html.escape(cls)}">')

    def end(self) -> None:
        """Close the innermost block opened by begin()."""
        self.html.append(f"</{self._open.pop()}>")

    def contents(self) -> None:
        """Put the table of contents here (default: right under the title)."""
        self.html.append(_NAV)

    def sentences(self, items: list[list[tuple[str, str]]]) -> None:
        """A bulleted list of sentences, each made of (text, style) parts: style '', 'b' (bold) or 'verdict'."""
        if not items:
            return
        out = []
        for parts in items:
            spans = []
            for text, style in parts:
                cls = word_class(text) if style == "verdict" else ""
                spans.append(f'<b class="{cls}">{html.escape(text)}</b>' if cls or style else html.escape(text))
            out.append("<li>" + "".join(spans) + "</li>")
        self.html.append('<ul class="sentences">' + "".join(out) + "</ul>")
        self.md += ["- " + "".join(f"**{_md_text(t)}**" if st and t.strip() else _md_text(t) for t, st in parts)
                    for parts in items]
        self.md.append("")

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
        """A table of plain-text cells (verdict words are coloured in HTML) and Link cells."""
        if not rows:
            return
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(_cell_html(c) for c in row) + "</tr>" for row in rows)
        self.html.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>")
        self.md.append("| " + " | ".join(_md_text(h) for h in headers) + " |")
        self.md.append("|" + "---|" * len(headers))
        self.md += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in rows]
        self.md.append("")

    def image(self, path: Path, alt: str) -> None:
        """A PNG: embedded as a data URI in HTML (one file opens offline), linked by name in Markdown."""
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.html.append(f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></p>')
        self.md += [f"![{_md_text(alt)}]({path.name})", ""]

    def art_pair(self, left: tuple[str, str], right: tuple[str, str] | None, badge: str = "") -> None:
        """Two (caption, art) pieces side by side, whitespace kept exactly; badge marks the left one ("looping")."""
        figs = [p for p in (left, right) if p is not None]
        marks = [f'<span class="badge">{html.escape(badge)}</span> ' if badge else "", ""]
        self.html.append('<div class="pair">' + "".join(
            f"<figure><figcaption>{mark}{html.escape(cap)}</figcaption>{_pre(art)}</figure>"
            for mark, (cap, art) in zip(marks, figs)) + "</div>")
        for mark, (cap, art) in zip([f"**[{_md_text(badge)}]** " if badge else "", ""], figs):
            fence = _fence(art)
            self.md += [f"{mark}*{_md_text(cap)}*", "", fence, art.rstrip("\n"), fence, ""]

    def render_html(self) -> str:
        """The complete, self-contained HTML page."""
        nav = "<nav>" + " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.sections) + "</nav>"
        body = "\n".join(self.html)
        body = body.replace(_NAV, nav, 1) if _NAV in body else nav + "\n" + body
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n" + body + "\n</body></html>\n")

    def render_md(self) -> str:
        """The Markdown twin of the page."""
        return "\n".join(self.md).rstrip("\n") + "\n"

    def write(self, out_dir: Path) -> Path:
        """Atomically write index.html and report.md into out_dir; returns the HTML path."""
        atomic_write_text(out_dir / "report.md", self.render_md())
        return atomic_write_text(out_dir / "index.html", self.render_html())


def fmt(value: Any, digits: int = 3) -> str:
    """A compact number (or '-' when missing)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_apart(*values: Any, digits: int = 3) -> list[str]:
    """fmt() of each value, with more significant digits (up to 6) where fewer would print two unequal ones alike:
    "fell from 11.55 to 11.46", never "from 11.5 to 11.5"."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for d in range(digits, 7):
        out = [fmt(v, d) for v in values]
        shown = {(fmt(v, d)) for v in numbers}
        if len(shown) == len(set(numbers)):
            return out
    return [fmt(v, 6) for v in values]


def fmt_bytes(n: Any) -> str:
    """Bytes as KiB/MiB/GiB."""
    if not n:
        return "-"
    if n >= 1024 ** 3:
        return f"{n / 1024 ** 3:.2f} GiB"
    return f"{n / 1024 ** 2:.0f} MiB" if n >= 1024 ** 2 else f"{n / 1024:.0f} KiB"


def fmt_pct(value: Any) -> str:
    """A fraction as a percentage (MFU, tolerances)."""
    return f"{100 * value:.3g}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def fmt_metric(m: Metric | None, uncertainty: bool = True) -> str:
    """value [ci_low, ci_high], or value ± stderr, or value."""
    if m is None or m.value is None:
        return "-"
    if not uncertainty:
        return fmt(m.value)
    if m.ci_low is not None and m.ci_high is not None:
        return f"{fmt(m.value)} [{fmt(m.ci_low)}, {fmt(m.ci_high)}]"
    if m.stderr is not None:
        return f"{fmt(m.value)} ± {fmt(m.stderr, 2)}"
    return fmt(m.value)


def fmt_mapping(value: Any) -> str:
    """A dict as 'k v, k v' (versions, device), anything else as str."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt_mapping(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_mapping(v) for v in value)
    return fmt(value)
