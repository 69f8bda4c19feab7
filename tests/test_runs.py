"""`asciitune runs`: every run under a reports folder in one table, as JSON/CSV for pandas, and as a page."""
from __future__ import annotations

import html
import io
import json
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
