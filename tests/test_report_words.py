"""What a run's report and console summary say in words: numbers that differ read differently, Markdown that
reads as plain text, and the data warnings a reader of the verdicts must see."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from run_fixture import make_run

from harness.cli.main import main
from harness.cli.run import print_summary
from harness.config import DataConfig
from harness.data import build_dataset
from harness.judge.verdict import LOSS_RULE
from harness.report.doc import fmt_apart
from harness.report.run import write_report
from harness.report.story import loss_evidence


def test_unequal_numbers_never_print_alike():
    assert fmt_apart(11.5497, 11.4635) == ["11.55", "11.46"]  # fmt alone gave "11.5" and "11.5"
    assert fmt_apart(2.0, 1.5, 1.5) == ["2", "1.5", "1.5"]  # equal ones stay equal, short ones short
    assert fmt_apart(None, 0.5) == ["-", "0.5"]


def test_a_loss_that_moved_is_said_to_move(tmp_path: Path):
    run = make_run(tmp_path / "run", bench=False)
    v = run.variants["r8"]  # the tiny config's numbers: 11.55 -> 11.46, the minimum at the last step
    v.curves.heldout_loss = [11.5497, 11.5232, 11.4936, 11.4727, 11.4635, 11.4635]
    la = v.loss_analysis
    la.heldout_min, la.heldout_min_step, la.final_heldout_loss = 11.4635, 50, 11.4635
    assert loss_evidence(v).startswith("held-out loss fell from 11.55 to 11.46 by the last step (50)")


def test_report_md_rules_read_as_plain_text(tmp_path: Path):
    run = make_run(tmp_path / "run", bench=False)
    run.variants["r8"].loss_analysis.rule = LOSS_RULE
    run.save(tmp_path / "run")
    write_report(tmp_path / "run")
    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "ended >=5% above its minimum" in md and "fell <10% from step 0" in md
    assert "&gt;" not in md and "&lt;" not in md


def _small_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "art"
    folder.mkdir()
    for i, face in enumerate(["o.o", "-.-", "^.^", "O.O", "x.x", "u.u", "@.@", "*.*", "=.=", "q.p"]):
        (folder / f"{i}.txt").write_text(f" /\\_/\\\n( {face} ) {'~' * i}\n > ^ <\n{'|' * (i + 1)}\n", encoding="utf-8")
    return folder


def test_an_uneven_split_that_a_run_allowed_is_flagged_in_the_summary_and_the_report(tmp_path: Path):
    ds = build_dataset(DataConfig(source=str(_small_folder(tmp_path)), heldout_fraction=0.45,
                                  allow_uneven_split=True))
    summary = ds.summary()
    assert "not within 0.05 of 0.55 and 0.45" in summary["uneven_split"]
    run = make_run(tmp_path / "run", bench=False)
    run.data = summary
    run.save(tmp_path / "run")
    out = Console(file=io.StringIO(), width=200)
    print_summary(run, out, tmp_path / "run")
    assert "warning: Uneven split (data.allow_uneven_split let the run go on): training keeps" \
        in out.file.getvalue()
    write_report(tmp_path / "run")
    first_screen = (tmp_path / "run" / "report.md").read_text(encoding="utf-8").split("## ")[0]
    assert "Warning: Uneven split (data.allow\\_uneven\\_split let the run go on)" in first_screen


def test_data_names_non_ascii_pieces_and_what_the_judge_does(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _small_folder(tmp_path)
    (folder / "box.txt").write_text("┌──┐\n│ok│\n└──┘\n", encoding="utf-8")
    assert main(["data", "--config", "tiny", f"data.source={folder}", "data.max_train_pieces=0",
                 "data.heldout_fraction=0.2", "data.allow_uneven_split=true"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "1 of the 11 pieces a run trains on or holds out contains non-ASCII characters (┌ ─ ┐ │ └ ┘)" in out
    assert "which makes it invalid" in out and "In: box.txt." in out
