"""Run comparison: noise classification, threshold gate and exit codes, schema refusal, warnings, reports."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_fixture import make_run

from harness.cli.main import build_parser
from harness.cli.report import load_thresholds, parse_fail_on
from harness.errors import UserError
from harness.report.compare import classify, compare
from harness.results import SCHEMA_VERSION, Metric, Scores, load


def _cli(*argv: str) -> int:
    """The real command line's parser, with user errors left to raise."""
    args = build_parser().parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """reports/runs/{base,worse,better} under tmp_path; 'worse' lost 0.2 novelty in r8, 'better' gained 0.2."""
    for name, shift in (("base", 0.0), ("worse", -0.2), ("better", 0.2)):
        make_run(tmp_path / "runs" / name, run_id=name, novelty_shift=shift, bench=False)
    return tmp_path


def _delta(comp, variant: str, metric: str, run_b: str | None = None):
    return next(d for d in comp.deltas if d.variant == variant and d.metric == metric
                and (run_b is None or d.run_b == run_b))


def test_classify_rules() -> None:
    m = lambda v, se=0.02, hib=True: Metric(value=v, stderr=se, higher_is_better=hib)
    assert classify(m(0.5), m(0.53), True)[2] == "noise"  # 0.03 < 2 * sqrt(2) * 0.02
    assert classify(m(0.5), m(0.6), True)[2] == "improvement"
    assert classify(m(0.5), m(0.4), True)[2] == "regression"
    assert classify(m(0.5), m(0.6), False)[2] == "regression"  # lower is better
    assert classify(m(0.5), m(0.5), True)[2] == "noise"
    assert classify(m(0.5, 0.0), m(0.51, 0.0), True)[2] == "improvement"  # exact numbers: any change is real
    # No stderr: noise within 5% of the baseline.
    assert classify(m(2.0, None), m(2.08, None), False)[2] == "noise"
    assert classify(m(2.0, None), m(2.2, None), False)[2] == "regression"
    # stderr from the 95% CI when missing: width 0.392 -> stderr 0.1 -> noise below 0.283.
    ci = lambda v: Metric(value=v, stderr=None, ci_low=v - 0.196, ci_high=v + 0.196)
    delta, se, change = classify(ci(0.5), ci(0.75), True)
    assert change == "noise" and se == pytest.approx(0.1414, abs=1e-3)
    assert classify(m(0.5), None, True)[2] == "missing"


def test_compare_two_runs(runs: Path) -> None:
    comp = compare([load(runs / "runs" / "base"), load(runs / "runs" / "worse")])
    assert _delta(comp, "r8", "novelty").change == "regression"
    assert _delta(comp, "r8", "novelty").delta == pytest.approx(-0.2)
    assert _delta(comp, "r8", "novelty").worse_by == pytest.approx(0.2)
    assert _delta(comp, "r32", "novelty").change == "noise"
    assert _delta(comp, "r8", "final_heldout_loss").change == "noise"  # loss and speed are compared too
    assert _delta(comp, "r8", "train_tokens_per_s").higher_is_better
    assert comp.warnings == [] and not comp.failed
    assert "r64 (no metrics in either run)" in comp.unmatched  # failed in both


def test_variant_failing_in_new_run_fails_the_gate(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False)
    b.variants["r8"].status, b.variants["r8"].scores, b.variants["r8"].error = "failed", Scores(), "boom"
    comp = compare([a, b], {"novelty": 0.5})
    assert any("r8 failed in b: boom" in w for w in comp.warnings)
    assert [(f.delta.variant, f.delta.metric) for f in comp.failures] == [("r8", "novelty"), ("r8", "verdict")]
    assert "missing from b" in comp.failures[0].message()
    # the runs named in the order of the values, baseline first (it once read "b vs a: learning -> failed")
    assert comp.failures[1].message() == "verdict (r8, a -> b): learning -> failed, a worse verdict"
    assert compare([a, b]).failed  # a worse verdict fails the gate without any threshold


@pytest.mark.parametrize(("before", "after", "fails"), [
    ("learning", "noise", True), ("learning", "undertrained", True), ("learning", "mixed", True),
    ("mixed", "memorizing", True), ("memorizing", "invalid", False), ("mixed", "undertrained", False),
    ("noise", "learning", False), ("invalid", "noise", False)])
def test_a_worse_verdict_is_a_regression_on_its_own(tmp_path: Path, capsys, before, after, fails) -> None:
    a = make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False)
    a.variants["r8"].verdict.verdict, b.variants["r8"].verdict.verdict = before, after
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    change = next(v for v in compare([a, b]).verdicts if v.variant == "r8" and v.metric == "verdict")
    assert (change.change == "regression") == fails
    assert _cli("compare", str(tmp_path / "a"), str(tmp_path / "b")) == int(fails)  # no --fail-on needed
    out, err = capsys.readouterr()
    assert f"{before}" in out and (not fails or "a worse verdict" in err)


def test_copy_verdict_novel_to_mixed_fails_the_gate(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False)
    a.variants["r8"].copy_analysis.verdict, b.variants["r8"].copy_analysis.verdict = "novel", "mixed"
    comp = compare([a, b])
    assert [(f.delta.variant, f.delta.metric) for f in comp.failures] == [("r8", "copy_verdict")]


def test_cats_are_no_regression_against_prose(tmp_path: Path) -> None:
    # A run whose samples were all prose has no valid sample: novelty (over valid samples) is absent,
    # not 0.90 against the cats' 0.67; the verdict improved from invalid to learning.
    prose = make_run(tmp_path / "prose", run_id="prose", bench=False)
    cats = make_run(tmp_path / "cats", run_id="cats", bench=False)
    for name in ("r8", "r32"):
        v = prose.variants[name]
        v.verdict.verdict = "invalid"
        for metric in ("novelty", "width_consistency", "exact_copy_rate", "near_copy_rate", "copied_line_share"):
            v.scores.metrics[metric] = Metric(n=0, higher_is_better=v.scores.metrics[metric].higher_is_better)
            v.scores.populations[metric] = cats.variants[name].scores.populations[metric] = "valid"
        v.scores.metrics["valid_rate"] = Metric(0.0, 0.0, 0.0, 0.0, 8)
    prose.save(tmp_path / "prose")
    cats.save(tmp_path / "cats")
    comp = compare([prose, cats], {"novelty": 0.05})
    assert _delta(comp, "r8", "novelty").change == "missing" and not comp.failed
    assert _delta(comp, "r8", "valid_rate").change == "improvement"
    assert _cli("compare", str(tmp_path / "prose"), str(tmp_path / "cats"), "--fail-on", "novelty=0.05") == 0


def test_metrics_over_different_samples_are_not_compared(tmp_path: Path) -> None:
    old = make_run(tmp_path / "old", run_id="old", bench=False)  # written before populations: all samples
    new = make_run(tmp_path / "new", run_id="new", bench=False, novelty_shift=-0.3)
    new.variants["r8"].scores.populations["novelty"] = "valid"
    comp = compare([old, new], {"novelty": 0.05})
    assert _delta(comp, "r8", "novelty").change == "incomparable" and not comp.failed
    assert any("novelty is over valid samples in new but over all in old" in w for w in comp.warnings)


def test_fail_on_exit_codes(runs: Path, capsys: pytest.CaptureFixture) -> None:
    base, worse, better = (str(runs / "runs" / n) for n in ("base", "worse", "better"))
    assert _cli("compare", base, worse, "--fail-on", "novelty=0.05") == 1
    err = capsys.readouterr().err
    assert "FAIL" in err and "novelty" in err and "r8" in err
    assert _cli("compare", base, worse, "--fail-on", "novelty=0.3") == 0  # within the allowed drop
    assert _cli("compare", base, better, "--fail-on", "novelty=0") == 0  # improvements never fail
    assert _cli("compare", base, worse, "--fail-on", "valid_rate=0") == 0  # other metric unchanged
    out = capsys.readouterr().out
    assert "regression" in out and "novelty" in out


def test_run_ids_and_thresholds_file(runs: Path, capsys: pytest.CaptureFixture) -> None:
    toml = runs / "gate.toml"
    toml.write_text("[fail_on]\nnovelty = 0.05\nvalid_rate = 0.1\n", encoding="utf-8")
    assert load_thresholds(toml) == {"novelty": 0.05, "valid_rate": 0.1}
    (runs / "gate.json").write_text(json.dumps({"novelty": 0.5}), encoding="utf-8")
    common = ["--reports-dir", str(runs)]
    assert _cli("compare", "base", "worse", "--thresholds", str(toml), *common) == 1
    assert _cli("compare", "base", "worse", "--thresholds", str(runs / "gate.json"), *common) == 0
    # --fail-on overrides the file.
    assert _cli("compare", "base", "worse", "--thresholds", str(toml), "--fail-on", "novelty=1", *common) == 0
    capsys.readouterr()


def test_bad_thresholds_are_user_errors(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="novelty=0.05"):
        parse_fail_on(["novelty"])
    with pytest.raises(UserError):
        parse_fail_on(["novelty=-1"])
    bad = tmp_path / "bad.toml"
    bad.write_text("novelty = 'x'\n", encoding="utf-8")
    with pytest.raises(UserError):
        load_thresholds(bad)
    with pytest.raises(UserError, match="noveltyy"):
        compare([load(runs / "runs" / "base"), load(runs / "runs" / "worse")], {"noveltyy": 0.1})


def test_refuses_other_schema_version(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False)
    b.schema_version = SCHEMA_VERSION - 1
    with pytest.raises(UserError, match="schema"):
        compare([a, b])
    make_run(tmp_path / "c", run_id="c", bench=False, schema_version=SCHEMA_VERSION - 1)
    with pytest.raises(UserError, match="schema"):
        _cli("compare", str(tmp_path / "a"), str(tmp_path / "c"))


def test_warns_on_different_data_model_and_device(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False, data_hash="e" * 64, device="NVIDIA A10G")
    b.variants["r8"].config["model"]["name"] = "tiny-gpt2"
    b.save(tmp_path / "b")
    assert _cli("compare", str(tmp_path / "a"), str(tmp_path / "b")) == 0
    err = capsys.readouterr().err
    assert "different data" in err and "different device" in err and "tiny-gpt2" in err


def test_single_variant_runs_pair_across_names(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False)
    a.variants = {"r8": a.variants["r8"]}
    b.variants = {"r16": b.variants["r8"]}
    comp = compare([a, b])
    assert {d.variant for d in comp.deltas} == {"r8 / r16"}
    b.variants = {}
    with pytest.raises(UserError, match="share no variant"):
        compare([a, b])
    with pytest.raises(UserError, match="at least two"):
        compare([a])


def test_three_runs_write_a_comparison_report(runs: Path, capsys: pytest.CaptureFixture) -> None:
    assert _cli("compare", "base", "worse", "better", "--reports-dir", str(runs)) == 0
    out_dirs = list(runs.glob("compare-*"))
    assert len(out_dirs) == 1
    page = (out_dirs[0] / "index.html").read_text(encoding="utf-8")
    md = (out_dirs[0] / "report.md").read_text(encoding="utf-8")
    assert (out_dirs[0] / "compare-scores.png").stat().st_size > 0
    for text in (page, md):
        assert "worse" in text and "better" in text and "regression" in text and "improvement" in text
    assert "<script" not in page
    assert _cli("compare", "base", "worse", "--reports-dir", str(runs), "--out", str(runs / "two")) == 0
    assert (runs / "two" / "index.html").is_file()
    capsys.readouterr()


def test_report_subcommand(runs: Path, capsys: pytest.CaptureFixture) -> None:
    assert _cli("report", "base", "--reports-dir", str(runs)) == 0
    assert (runs / "runs" / "base" / "index.html").is_file()
    assert "index.html" in capsys.readouterr().out
    with pytest.raises(UserError, match="not found"):
        _cli("report", "nope", "--reports-dir", str(runs))


def test_main_parser_reports_dir_is_kept(runs: Path, capsys: pytest.CaptureFixture) -> None:
    args = build_parser().parse_args(["--reports-dir", str(runs), "compare", "base", "worse"])
    assert args.reports_dir == runs  # not overwritten by the subcommand's own (unset) --reports-dir
    assert args.func(args) == 0
    capsys.readouterr()


def test_valid_rate_and_heldout_loss_regressions_beyond_seed_noise_fail_without_a_threshold(tmp_path: Path) -> None:
    # A baseline already in the bottom tier cannot get a worse verdict tier, yet its art can still get worse.
    a = make_run(tmp_path / "a", run_id="a", bench=False)
    small, large = make_run(tmp_path / "s", run_id="s", bench=False), make_run(tmp_path / "l", run_id="l", bench=False)
    small.variants["r8"].scores.metrics["valid_rate"].value -= 0.03  # inside 2 x sqrt(0.02^2 + 0.02^2)
    large.variants["r8"].scores.metrics["valid_rate"].value -= 0.5
    assert not compare([a, small]).failed
    comp = compare([a, large])
    assert [(f.delta.variant, f.delta.metric) for f in comp.failures] == [("r8", "valid_rate")]
    worse_loss = make_run(tmp_path / "w", run_id="w", bench=False)
    worse_loss.variants["r8"].loss_analysis.final_heldout_loss *= 1.2  # 20% against a 2.7% seed spread per run
    assert [f.delta.metric for f in compare([a, worse_loss]).failures] == ["final_heldout_loss"]
    near = make_run(tmp_path / "n", run_id="n", bench=False)
    near.variants["r8"].loss_analysis.final_heldout_loss *= 1.05
    assert not compare([a, near]).failed


def test_a_passing_gate_says_so_and_a_failing_one_names_runs_in_the_order_of_its_values(
        runs: Path, capsys: pytest.CaptureFixture) -> None:
    base, worse, better = (str(runs / "runs" / n) for n in ("base", "worse", "better"))
    assert _cli("compare", base, better, "--fail-on", "novelty=0") == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == ("PASS: no verdict moved to a worse tier and no gated metric (valid_rate, "
                                            "loop_rate, final_heldout_loss, novelty) regressed beyond noise or its "
                                            "threshold, in 2 variants of 1 run against base.")
    assert _cli("compare", base, worse, "--fail-on", "novelty=0.05") == 1
    captured = capsys.readouterr()
    assert "PASS" not in captured.out
    assert "  novelty (r8, base -> worse): 0.55 -> 0.35, worse by 0.2 > 0.05" in captured.err


def test_a_metric_neither_run_measured_is_unmeasured_not_missing(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False)
    for run in (a, b):  # no valid sample in either run: metrics over valid samples have no value
        run.variants["r8"].scores.metrics["width_consistency"] = Metric(None, n=0)
    comp = compare([a, b])
    assert _delta(comp, "r8", "width_consistency").change == "unmeasured"
    b.variants["r8"].scores.metrics.pop("novelty")
    assert _delta(compare([a, b]), "r8", "novelty").change == "missing"  # measured in one run only


def test_a_change_is_never_rounded_away(tmp_path: Path) -> None:
    from harness.report.compare import delta_rows

    a = make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False)
    a.variants["r8"].loss_analysis.final_heldout_loss = 11.4635
    b.variants["r8"].loss_analysis.final_heldout_loss = 11.5420
    row = next(r for r in delta_rows(compare([a, b])) if r[0] == "r8" and r[1].startswith("final_heldout_loss"))
    assert row[3:6] == ["11.46", "11.54", "+0.0785"]  # it read "11.5", "11.5", "+0.0785"
