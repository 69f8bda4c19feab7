"""`asciitune runs`: every run under a reports folder in one table, as JSON/CSV for pandas, and as a page."""
from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from run_fixture import make_run

from harness.cli.main import main
from harness.report.runs import COLUMNS, run_row, scan
from harness.results import SCHEMA_VERSION


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good runs (b draws more novel art), a benchmark-only run, and three files that cannot be read."""
    root = tmp_path_factory.mktemp("reports")
    make_run(root / "runs" / "run-a", run_id="run-a", bench=False)
    b = make_run(root / "runs" / "run-b", run_id="run-b", novelty_shift=0.1, bench=False, device="NVIDIA H200")
    b.variants["r8"].name = "r8 <script>x</script>"  # a name that must stay text on the page
    b.variants = {v.name: v for v in b.variants.values()}
    b.save(root / "runs" / "run-b")
    bench = make_run(root / "gpu-bench" / "h100", run_id="bench-h100")
    bench.variants = {}
    bench.save(root / "gpu-bench" / "h100")
    make_run(root / "runs" / "old", run_id="old", schema_version=1, bench=False)
    (root / "runs" / "broken").mkdir()
    (root / "runs" / "broken" / "results.json").write_text("{not json", encoding="utf-8")
    damaged = json.loads((root / "runs" / "run-a" / "results.json").read_text(encoding="utf-8"))
    damaged["variants"]["r8"]["train"]["steps"] = "many"
    (root / "runs" / "damaged").mkdir()
    (root / "runs" / "damaged" / "results.json").write_text(json.dumps(damaged), encoding="utf-8")
    return root


def test_scan_reads_every_run_and_skips_the_unreadable_with_the_reason(reports: Path) -> None:
    listing = scan(reports)
    assert [run.run_id for _, run in listing.runs] == ["bench-h100", "run-a", "run-b"]  # same date: by id
    reasons = {s.path: s.reason for s in listing.skipped}
    assert set(reasons) == {"runs/old/results.json", "runs/broken/results.json", "runs/damaged/results.json"}
    assert f"schema version 1, but this asciitune reads {SCHEMA_VERSION}" in reasons["runs/old/results.json"]
    assert "not readable as JSON" in reasons["runs/broken/results.json"]
    assert "'variants.r8.train.steps' is malformed" in reasons["runs/damaged/results.json"]
    assert scan(reports / "nowhere").runs == []


def test_a_row_is_the_run_and_its_best_variant(reports: Path) -> None:
    _, run = next(item for item in scan(reports).runs if item[1].run_id == "run-a")
    row = run_row(run, "runs/run-a")
    assert (row.best_variant, row.verdict, row.variants, row.failed) == ("r8", "learning", 3, 1)
    assert row.quality == pytest.approx(0.875 * 0.9 * 0.55) and row.novelty == pytest.approx(0.55)
    assert (row.heldout_min, row.heldout_min_step, row.final_heldout_loss) == (1.5, 40, 1.5)
    assert (row.config, row.device, row.data, row.variant_names) == ("default", "NVIDIA H100", "cats", "r8, r32, r64")
    bench = run_row(next(run for _, run in scan(reports).runs if run.run_id == "bench-h100"))
    assert bench.variants == 0 and bench.best_variant is None and bench.quality is None


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_csv_and_json_load_in_pandas_one_row_per_run(reports: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _cli(capsys, "--reports-dir", str(reports), "runs", "--csv")
    assert code == 0
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame.columns) == COLUMNS and list(frame.run_id) == ["bench-h100", "run-a", "run-b"]
    assert frame.quality.dtype.kind == "f" and frame.variants.dtype.kind == "i"
    assert frame.set_index("run_id").loc["run-b", "best_variant"] == "r8 <script>x</script>"
    assert err.count("skipped ") == 3 and "schema version 1" in err  # on stderr: stdout stays parseable
    code, out, _ = _cli(capsys, "runs", "--json", "--reports-dir", str(reports))
    assert code == 0
    from_json = pd.DataFrame(json.loads(out))
    assert list(from_json.columns) == COLUMNS and from_json.shape == frame.shape
    assert from_json.heldout_min_step.tolist()[1:] == [40, 40]


def test_table_lists_runs_and_skipped_files(reports: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _cli(capsys, "--reports-dir", str(reports), "runs")
    assert code == 0 and "run-a" in out and "run-b" in out and "learning" in out
    assert "runs/broken/results.json: not readable as JSON" in err
    code, out, _ = _cli(capsys, "--reports-dir", str(reports / "nowhere"), "runs")
    assert code == 0 and "No runs under" in out


def test_html_leaderboard_ranks_variants_across_runs(reports: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _cli(capsys, "--reports-dir", str(reports), "runs", "--html", str(tmp_path / "board"))
    assert code == 0 and "leaderboard:" in out
    page = (tmp_path / "board" / "index.html").read_text(encoding="utf-8")
    assert "<script>x" not in page and html.escape("r8 <script>x</script>") in page
    board = page.split("Leaderboard across runs</h2>")[1].split("</table>")[0]
    # b's r8 is more novel than a's, so it ranks first; the failed variants come last.
    assert board.index("<td>run-b</td><td>r8 &lt;script&gt;") < board.index("<td>run-a</td><td>r8</td>") \
        < board.index("<td>run-a</td><td>r64</td>")
    assert "different devices" in page and "Skipped results files" in page
    assert (tmp_path / "board" / "report.md").is_file()
    _cli(capsys, "--reports-dir", str(reports), "runs", "--html", str(tmp_path / "one.html"))
    assert (tmp_path / "one.html").is_file() and (tmp_path / "one.md").is_file()


# ---------------------------------------------------------------- a table that fits, runs told apart

@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs as `asciitune run` names them: two tiny runs told apart only by an override, one on other data, one on
    two GPUs over seeds; the first has a report."""
    root = tmp_path_factory.mktemp("realistic")
    specs = [("20261207-011443-bf0365", "/x/harness/__main__.py run --config tiny", "cats", "a" * 16, "CPU (x86_64, 2 "
              "threads)"),
             ("20261207-013012-bf0365", "/x/harness/__main__.py run --config tiny train.lr=1e-4 --backend peft",
              "cats", "a" * 16, "CPU (x86_64, 2 threads)"),
             ("20261207-020000-c41a77", "asciitune run data.source=/home/me/my_art", "/home/me/my_art", "b" * 16,
              "NVIDIA H100 80GB HBM3"),
             ("20261207-030000-c41a77", "asciitune run --seeds 3 data.max_piece_chars=600", "cats", "c" * 16,
              "NVIDIA H200")]
    for run_id, command, data, data_hash, device in specs:
        run = make_run(root / "runs" / run_id, run_id=run_id, data_hash=data_hash, device=device, bench=False)
        run.command, run.data = command, {**run.data, "name": data}
        if device == "NVIDIA H200":
            run.environment["device"]["count"] = 2
        run.save(root / "runs" / run_id)
    (root / "runs" / specs[0][0] / "index.html").write_text("<html></html>", encoding="utf-8")
    return root


def _table(root: Path, width: int, wide: bool = False) -> tuple[str, list[str]]:
    from rich.console import Console

    from harness.cli.runs import fit_table

    out = Console(file=io.StringIO(), width=width, highlight=False)
    dropped = fit_table(scan(root), root, out, wide=wide)
    return out.file.getvalue(), dropped


def _words_intact(text: str, cells: list[str]) -> bool:
    """Every word of every cell appears whole in the printed text: nothing was split across lines."""
    printed = set(text.split())
    return all(word in printed for cell in cells for word in cell.split())


@pytest.mark.parametrize("width", [80, 100])
def test_the_table_fits_ordinary_terminals_with_ids_whole(realistic: Path, width: int) -> None:
    from harness.report.runs import table_rows

    text, dropped = _table(realistic, width)
    lines = text.splitlines()
    assert all(len(line.rstrip()) <= width for line in lines), text
    for run_id in ("20261207-011443-bf0365", "20261207-013012-bf0365", "20261207-020000-c41a77"):
        assert any(run_id in line for line in lines)  # never cut (it was '20261207-011443-bf036')
    headers, rows = table_rows(scan(realistic))
    shown = [h for h in headers if h not in dropped and h in text]
    assert _words_intact(text, [row[headers.index(h)] for row in rows for h in shown])
    assert "learning" in text and "inval" not in text
    if dropped:
        assert f"Left out to fit {width} columns: {', '.join(dropped)}" in " ".join(text.split())


def test_piped_the_table_splits_no_word(realistic: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.report.runs import table_rows

    code, out, _ = _cli(capsys, "--reports-dir", str(realistic), "runs")  # captured: not a terminal
    assert code == 0
    headers, rows = table_rows(scan(realistic))
    for h in ("run", "config", "data", "verdict", "device"):
        assert _words_intact(out, [row[headers.index(h)] for row in rows])  # was 'varian'/'t', '(x86_6'/'4, 2'
    assert "H200 x2" in out and "H100" in out and "NVIDIA" not in out  # short device names
    code, out, _ = _cli(capsys, "--reports-dir", str(realistic), "runs", "--wide")
    assert "quality" in out and "copies" in out and "held-out min @ step" in out
    assert max(len(line) for line in out.splitlines()) > 140  # as wide as it is: nothing folded


def test_runs_are_told_apart_by_their_data_and_overrides(realistic: Path) -> None:
    from harness.report.runs import config_label, data_labels

    rows = {r.run_id: r for r in scan(realistic).rows()}
    first, second = rows["20261207-011443-bf0365"], rows["20261207-013012-bf0365"]
    assert (config_label(first), config_label(second)) == ("default", "default train.lr=1e-4 model.backend=peft")
    assert rows["20261207-030000-c41a77"].overrides == "train.seeds=3 data.max_piece_chars=600"
    labels = data_labels(list(rows.values()))
    assert labels[first.path] == labels[second.path] == "cats#aaaa"  # cats twice, with different content
    assert labels[rows["20261207-030000-c41a77"].path] == "cats#cccc"
    assert labels[rows["20261207-020000-c41a77"].path] == "my_art/"
    assert first.report == f"{first.path}/index.html" and second.report == ""


def test_the_leaderboard_names_each_data_set_and_links_each_report(realistic: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _cli(capsys, "--reports-dir", str(realistic), "runs", "--html", str(tmp_path / "board.html"))
    assert code == 0 and f"leaderboard: {tmp_path / 'board.html'} (and its Markdown twin, {tmp_path / 'board.md'})" \
        in " ".join(out.split())
    page = (tmp_path / "board.html").read_text(encoding="utf-8")
    assert "These runs used 3 different data sets (by content hash): cats#aaaa (hash aaaaaaaaaaaaaaaa): " \
           "20261207-011443-bf0365, 20261207-013012-bf0365; my_art/ (hash bbbbbbbbbbbbbbbb)" in html.unescape(page)
    assert "<td>default train.lr=1e-4 model.backend=peft</td>" in page
    hrefs = re.findall(r'<a href="([^"]+)">report</a>', page)
    assert hrefs and all((tmp_path / html.unescape(h)).resolve().is_file() for h in hrefs)
    assert "no report" in page
    md = (tmp_path / "board.md").read_text(encoding="utf-8")
    assert "[report](" in md


def test_unequal_losses_never_read_alike_in_the_table(tmp_path: Path) -> None:
    from harness.report.runs import table_columns, table_rows

    for run_id, loss in (("a", 11.4635), ("b", 11.5432), ("c", 11.5432)):
        run = make_run(tmp_path / run_id, run_id=run_id, bench=False)
        for v in run.variants.values():
            if v.loss_analysis:
                v.loss_analysis.heldout_min = loss
        run.save(tmp_path / run_id)
    listing = scan(tmp_path)
    headers, rows = table_rows(listing, table_columns(listing))
    assert [r[headers.index("held-out min")] for r in rows] == ["11.46", "11.54", "11.54"]  # not 11.5 three times
