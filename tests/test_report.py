"""Run reports: files written, every string escaped, Markdown fences safe, ranking as stated."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from run_fixture import CAT, EVIL_ART, FENCE_ART, make_run, scores

from harness import plots
from harness.report import RANKING_RULE, _fence, rank, write_report
from harness.results import TrainStats, VariantResult, load


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One full report shared by the read-only tests (plotting dominates the time)."""
    run_dir = tmp_path_factory.mktemp("report") / "runs" / "run-a"
    make_run(run_dir)
    index = write_report(run_dir)
    return run_dir, index.read_text(encoding="utf-8"), (run_dir / "report.md").read_text(encoding="utf-8")


def test_writes_html_markdown_and_plots(report: tuple[Path, str, str]) -> None:
    run_dir, page, md = report
    for name in ("index.html", "report.md", "loss-curves.png", "scores.png", "novelty.png", "bench-speed.png",
                 "bench-memory.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert not list(run_dir.glob(".*.tmp"))  # atomic writes left no temp files
    for text in (page, md):
        assert "run-a" in text and "cfg0123456789abc" in text and "dddddddddddddddd" in text
        assert "abc1234" in text and "NVIDIA H100" in text and "torch 2.5.1" in text
    assert html.escape(RANKING_RULE) in page


def test_html_is_self_contained_and_has_no_script(report: tuple[Path, str, str]) -> None:
    run_dir, page, _ = report
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(list(run_dir.glob("*.png")))
    assert all(s.startswith("data:image/png;base64,") for s in srcs)


def test_art_and_strings_are_escaped_with_whitespace_kept(report: tuple[Path, str, str]) -> None:
    _, page, _ = report
    assert "<script>alert(1)</script>" not in page
    # One extra newline after <pre>, because the HTML parser drops the first one.
    assert '<pre class="art">\n' + html.escape(EVIL_ART) + "</pre>" in page
    assert html.escape(CAT + "\n& <i>") in page
    assert "CUDA out of memory &lt;at&gt; step 3 &amp; more" in page  # error strings too
    assert "final rule &lt;combined&gt;" in page


def _strip_fences(md: str) -> tuple[str, list[str]]:
    """CommonMark-style fenced blocks out of md: (text outside fences, block contents)."""
    outside, blocks, fence, body = [], [], None, []
    for line in md.split("\n"):
        if fence is None and re.fullmatch(r"`{3,}", line):
            fence, body = line, []
        elif fence is not None and re.fullmatch(r"`{3,}", line) and len(line) >= len(fence):
            blocks.append("\n".join(body))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            outside.append(line)
    assert fence is None, "unclosed fence"
    return "\n".join(outside), blocks


def test_markdown_fences_hold_the_art(report: tuple[Path, str, str]) -> None:
    _, _, md = report
    outside, blocks = _strip_fences(md)
    assert EVIL_ART.rstrip("\n") in blocks
    assert FENCE_ART.rstrip("\n") in blocks  # backticks inside the art did not close its fence
    assert "<script" not in outside and "<at>" not in outside  # raw HTML outside code is escaped
    assert "![train vs held-out loss per variant](loss-curves.png)" in outside
    assert _fence("a ```` b") == "`````" and _fence("plain") == "```"


def test_report_without_bench_scores_or_samples(tmp_path: Path) -> None:
    run_dir = tmp_path / "bare"
    run = make_run(run_dir, bench=False)
    run.bench = {"points": [{"backend": "peft", "status": "error"}]}  # partial benchmark
    run.human_reference = {}
    for v in run.variants.values():
        v.scores, v.samples_file = {}, ""
    run.save(run_dir)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "No readable samples." in page and "Failed: CUDA out of memory" in page
    assert not (run_dir / "scores.png").exists() and not (run_dir / "novelty.png").exists()
    assert (run_dir / "loss-curves.png").exists()


def test_plot_run_returns_written_names(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run = make_run(run_dir, bench=False)
    names = plots.plot_run(run, run_dir)
    assert names == ["loss-curves.png", "scores.png", "novelty.png"]
    assert all((run_dir / n).read_bytes().startswith(b"\x89PNG") for n in names)


def _v(name: str, verdict: str, novelty: float, loss: float = 1.0, status: str = "done") -> VariantResult:
    return VariantResult(name=name, status=status, scores=scores(novelty, 0.9, 1.0, 0.0),
                         verdict={"verdict": verdict}, loss_analysis={"final_heldout_loss": loss}, train=TrainStats())


def test_ranking_rule() -> None:
    ranked = rank([_v("copier", "memorizing", 0.9), _v("failed", "", 0.9, status="failed"),
                   _v("lazy", "undertrained", 0.9), _v("ok-low", "learning", 0.3), _v("broken", "invalid", 0.95),
                   _v("ok-high", "novel", 0.6, loss=2.0), _v("ok-tie", "learning", 0.6, loss=1.5),
                   _v("some-copies", "mixed", 0.8), VariantResult(name="unscored", status="done")])
    assert [v.name for v in ranked] == ["ok-tie", "ok-high", "ok-low", "lazy", "some-copies", "broken", "copier",
                                        "failed", "unscored"]


def test_report_ranks_learning_variant_first(report: tuple[Path, str, str]) -> None:
    _, page, _ = report
    board = page.split("Leaderboard</h2>")[1].split("</table>")[0]
    assert board.index("<td>r8</td>") < board.index("<td>r32</td>") < board.index("<td>r64</td>")
    assert load(report[0]).variants["r8"].verdict["verdict"] == "learning"


def test_odd_names_damaged_samples_and_ragged_curves(tmp_path: Path) -> None:
    run_dir = tmp_path / "odd"
    run = make_run(run_dir, bench=False)
    odd = run.variants.pop("r8")
    odd.name = "cost$5 <b>$x^"  # a '$' would start matplotlib math mode; '<b>' must stay text
    odd.curves.heldout_loss = odd.curves.heldout_loss[:-1]  # measured while still running
    run.variants[odd.name] = odd
    run.save(run_dir)
    (run_dir / odd.samples_file).write_text("{not json\n", encoding="utf-8")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "cost$5 &lt;b&gt;$x^" in page and "<b>$x" not in page
    assert f"No readable samples in {odd.samples_file}." in page


def test_markdown_renders_art_as_code(report: tuple[Path, str, str]) -> None:
    markdown_it = pytest.importorskip("markdown_it")  # comes with rich
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(report[2])
    assert "<script" not in rendered and "<b>x" not in rendered
    assert "<pre><code>" + html.escape(EVIL_ART.rstrip("\n"), quote=False) + "\n</code></pre>" in rendered
    assert "<pre><code>" + html.escape(FENCE_ART.rstrip("\n"), quote=False) + "\n</code></pre>" in rendered
    assert "<td>CUDA out of memory &lt;at&gt; step 3 &amp; more</td>" in rendered


def test_report_on_real_scores(tmp_path: Path) -> None:
    score = pytest.importorskip("harness.score")
    train = [CAT, " _\n(_)\n |", "  ^\n / \\\n/___\\"]
    texts = [CAT, EVIL_ART, "  ^\n / \\\n/___\\\n  |"]
    run_dir = tmp_path / "real"
    run = make_run(run_dir, bench=False)
    scored = score.score_pieces(texts, train, cut_off=[False, False, True])
    human = score.human_reference(["  o\n /|\\\n / \\", " [#]\n [#]"], train)
    verdict = score.combine_verdicts("learning", score.copy_verdict(scored, human))
    run.human_reference = {k: v for k, v in human.items() if k != "per_sample"}
    v = run.variants["r8"]
    v.scores, v.verdict = {k: x for k, x in scored.items() if k != "per_sample"}, verdict
    rows = [{"index": i, "text": t, **p, "nearest_train_text": train[p["nearest_train_index"]]}
            for i, (t, p) in enumerate(zip(texts, scored["per_sample"], strict=True))]
    (run_dir / v.samples_file).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run.save(run_dir)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert html.escape(verdict["verdict"]) in page and (run_dir / "novelty.png").exists()
