"""Run reports: files written, every string escaped, Markdown fences safe, ranking as stated."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from run_fixture import CAT, EVIL_ART, FENCE_ART, make_bench, make_run, scores

from harness.errors import UserError
from harness.judge.verdict import RANKING_RULE, rank
from harness.report import plots
from harness.report.doc import _fence
from harness.report.run import write_report
from harness.results import (
    SCHEMA_VERSION,
    BenchPoint,
    BenchResult,
    LossAnalysis,
    RunResult,
    Scores,
    TrainStats,
    VariantResult,
    Verdict,
    from_dict,
    load,
    to_jsonable,
)


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
    # raw HTML outside code is escaped: no '<' that opens a tag without the backslash that makes it text
    assert not re.search(r"(?<!\\)<[A-Za-z/!?]", outside) and "\\<at>" in outside
    assert "![train vs held-out loss per variant](loss-curves.png)" in outside
    assert _fence("a ```` b") == "`````" and _fence("plain") == "```"


def test_report_without_bench_scores_or_samples(tmp_path: Path) -> None:
    run_dir = tmp_path / "bare"
    run = make_run(run_dir, bench=False)
    run.bench = BenchResult(points=[BenchPoint(backend="peft", status="error")])  # partial benchmark
    run.human_reference = Scores()
    for v in run.variants.values():
        v.scores, v.samples_file = Scores(), ""
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


def _loss(final_heldout: float) -> LossAnalysis:
    return LossAnalysis("learning", "", final_heldout, 0, 0.5, final_heldout, final_heldout - 0.5, final_heldout / 0.5,
                        1.0, 0.5, None)


def _v(name: str, verdict: str, novelty: float, loss: float = 1.0, status: str = "done") -> VariantResult:
    return VariantResult(name=name, status=status, scores=scores(novelty, 0.9, 1.0, 0.0),
                         verdict=Verdict(verdict=verdict), loss_analysis=_loss(loss), train=TrainStats())


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
    assert load(report[0]).variants["r8"].verdict.verdict == "learning"


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
    score = pytest.importorskip("harness.judge.score")
    from harness.judge.verdict import combine_verdicts, copy_verdict

    train = [CAT, " _\n(_)\n |", "  ^\n / \\\n/___\\"]
    texts = [CAT, EVIL_ART, "  ^\n / \\\n/___\\\n  |"]
    run_dir = tmp_path / "real"
    run = make_run(run_dir, bench=False)
    scored = score.score_pieces(texts, train, cut_off=[False, False, True])
    human = score.human_reference(["  o\n /|\\\n / \\", " [#]\n [#]"], train)
    verdict = combine_verdicts("learning", copy_verdict(scored.per_sample, human))
    run.human_reference = Scores(metrics=human.metrics, diversity=human.diversity)
    v = run.variants["r8"]
    v.scores, v.verdict = Scores(metrics=scored.metrics, diversity=scored.diversity), verdict
    rows = [{"index": i, "text": t, **p, "nearest_train_text": train[p["nearest_train_index"]]}
            for i, (t, p) in enumerate(zip(texts, scored.per_sample, strict=True))]
    (run_dir / v.samples_file).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run.save(run_dir)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert html.escape(verdict.verdict) in page and (run_dir / "novelty.png").exists()


def test_point_names_and_workload() -> None:
    cats = {"backend": "peft", "workload": "cats", "batch_size": 2, "seq_len": 127}
    assert plots.point_name({"batch_size": 2, "seq_len": 512}) == "b2-s512"
    assert plots.point_name({"batch_size": 2, "seq_len": 512, "workload": "synthetic"}) == "b2-s512"
    assert plots.point_name(cats) == "cats-b2-s127" and plots.point_name(cats | {"label": "cats-b2x4"}) == "cats-b2x4"
    assert plots.is_workload(cats) and plots.is_workload({"label": "my-cats-run"})
    assert not plots.is_workload({"workload": "synthetic", "label": "b2-s512"})
    points = [to_jsonable(p) for p in make_bench().points]
    assert plots.names_in_order(points) == ["b2-s512", "b2-s1024", "b8-s512", "b8-s1024", "cats-b2x4"]
    fast, base, rows = plots._speedups(points)
    assert (fast, base) == ("unsloth", "peft")
    assert [r[0] for r in rows][-1] == "cats-b2x4" and rows[0][1] == pytest.approx(2.0)
    assert rows[3][1] is None and "oom" in rows[3][2]


def test_workload_point_is_not_on_the_grid_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figs = {}
    monkeypatch.setattr(plots, "save_png", lambda fig, out_dir, name: figs.setdefault(name, fig) and name)
    run = make_run(tmp_path / "r")
    assert plots.plot_bench(run, tmp_path) == ["bench-speed.png", "bench-memory.png"]
    throughput, workload, speedup = figs["bench-speed.png"].axes
    lines = {ln.get_label(): list(ln.get_xdata()) for ln in throughput.get_lines()}
    assert lines["peft batch 2"] == [512, 1024] and lines["unsloth batch 2"] == [512, 1024]
    assert not any(127 in xs for xs in lines.values())  # the cats point is not drawn as a sequence length
    assert [t.get_text().split("\n")[0] for t in workload.get_xticklabels()] == ["cats-b2x4"]
    assert sorted(round(b.get_height()) for b in workload.patches) == [450, 600]
    assert [t.get_text() for t in speedup.get_xticklabels()][-1] == "cats-b2x4"
    memory = figs["bench-memory.png"].axes[0]
    assert [t.get_text() for t in memory.get_xticklabels()][-1] == "cats-b2x4"


def test_bench_section(report: tuple[Path, str, str]) -> None:
    _, page, md = report
    bench = page.split("GPU benchmark</h2>")[1]
    assert "<td>b2-s512-adamw_torch</td><td>extra</td>" in bench  # extra points are in the points table
    assert "<td>cats-b2x4</td><td>workload</td><td>peft</td><td>cats</td><td>2</td><td>4</td>" in bench
    assert "merged &lt;by hand&gt; &amp; checked" in bench and "CUDA OOM &lt;peft&gt; &amp; co" in bench
    bare = bench.split("Harness vs bare training loop</h3>")[1].split("</table>")[0]
    assert "<td>peft</td><td>b2-s512</td><td>adamw_8bit</td><td>0.2</td><td>0.197</td><td>0.16</td><td>1.250</td>" \
           "<td>no</td>" in bare
    assert "<td>1.008</td><td>yes</td>" in bare and "bare_loop.py (sha256 fa6071e9) at batch 2 x 512" in bare
    parity = bench.split("Loss parity between backends</h3>")[1].split("<h", 1)[0]
    assert ("Losses agree within 2% per step at every compared point (largest &lt;0.02%&gt;). Tolerance: 2% "
            "relative difference per step over the first 10 steps, against peft.") in parity
    assert "<table" not in parity and "max_rel_diff" not in parity  # one sentence, not a row per key
    assert "Why this tolerance: bf16 &lt;rounding&gt;." in parity
    assert "Tolerance: 2% relative difference per step over the first 10 steps, against peft." in md


def test_parity_sentence_without_finding() -> None:
    from harness.report.sections import parity_sentence

    assert parity_sentence({"ok": False, "max_abs_diff": 0.5, "tolerance": 0.1}) == \
        "Losses do not agree within tolerance (max abs diff 0.5). Tolerance: 0.1."
    assert parity_sentence({}) == "Loss parity was checked."


def test_export_quality_table(report: tuple[Path, str, str]) -> None:
    _, page, md = report
    section = page.split("Quality per export format</h2>")[1].split("<h2")[0]
    assert "r8: quality per export format" in section and "r32" not in section
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>")[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    assert [c[0] for c in cells] == ["unexported", "gguf:q8_0", "merged"]  # the unexported row leads
    assert cells[0][1:5] == ["290 MiB", "2.5", "850", "0.9 [0.86, 0.94]"] and cells[0][-1] == "novel"
    assert cells[1][1:4] == ["145 MiB", "0.41", "850"] and cells[1][4:7] == ["0.88 [0.84, 0.92]", "0.52 [0.48, 0.56]",
                                                                               "0.8 [0.76, 0.84]"]
    assert cells[1][7] == "-"  # no copy analysis recorded for this export
    assert cells[2] == ["merged", "270 MiB", "-", "-", "-", "-", "-", "-"]  # exported, not scored yet
    assert "| gguf:q8\\_0 | 145 MiB | 0.41 |" in md


def test_bench_only_run_has_no_variant_sections(tmp_path: Path) -> None:
    run_dir = tmp_path / "bench-only"
    run = make_run(run_dir)
    run.variants = {}
    run.save(run_dir)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "GPU benchmark</h2>" in page and (run_dir / "bench-speed.png").exists()
    for absent in ("Leaderboard</h2>", "Samples</h2>", "Training and generation cost</h2>", "export format</h2>"):
        assert absent not in page


def test_report_on_real_bench_results(tmp_path: Path) -> None:
    real = Path(__file__).resolve().parents[1] / "reports" / "gpu-bench" / "bench-h200" / "results.json"
    if not real.is_file():
        pytest.skip("no committed GPU bench results")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_bytes(real.read_bytes())
    page = write_report(tmp_path / "b").read_text(encoding="utf-8")
    assert "<td>cats-b2x4</td><td>workload</td>" in page and "Harness vs bare training loop" in page
    assert page.count('<img src="data:image/png;base64,') == 2


def test_older_results_file_is_refused_in_one_sentence(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    make_run(run_dir, bench=False)
    data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    data["schema_version"] = 1
    with pytest.raises(UserError) as err:
        from_dict(data)
    msg = str(err.value)
    assert "version 1" in msg and f"version {SCHEMA_VERSION}" in msg  # which version it is, and which is read
    assert "re-run" in msg  # what to do
    assert "\n" not in msg and msg.count(". ") == 0 and msg.endswith(".")  # one sentence
    (run_dir / "results.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match="schema version 1"):
        load(run_dir)  # a file on disk is refused the same way
    assert from_dict(make_run(tmp_path / "new", bench=False).to_dict()) == load(tmp_path / "new")


def test_results_round_trip_typed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    back = load(tmp_path / "r")
    assert back == run and isinstance(back, RunResult) and isinstance(back.bench, BenchResult)
    assert isinstance(back.variants["r8"].loss_analysis, LossAnalysis) and back.schema_version == SCHEMA_VERSION
    assert back.variants["r8"].scores.value("novelty") == pytest.approx(0.55)
