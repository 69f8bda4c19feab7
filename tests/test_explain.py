"""Verdicts that say why (harness.judge.explain): the deciding clause, its numbers and the samples behind it."""
from __future__ import annotations

import random
import string

import pytest

from harness.config import DataConfig
from harness.data import build_dataset
from harness.judge import explain as explain_module
from harness.judge import reference, verdict
from harness.judge.explain import decided_by, explain
from harness.judge.judge import judge
from harness.results import RuleCheck


@pytest.fixture(scope="module")
def cats():
    """The default config's cats, and the reference a run judges their samples against."""
    ds = build_dataset(DataConfig())
    return [p.text for p in ds.train], [p.text for p in ds.heldout], reference.in_run(ds)


def _noise(rng: random.Random) -> str:
    return "\n".join("".join(rng.choice(string.printable[:94]) for _ in range(14)) for _ in range(5))


def test_copies_name_their_clause_and_the_copied_samples(cats):
    train, heldout, ref = cats
    texts = [heldout[0], train[0], train[1], train[2]]
    j = judge(ref, texts)
    why = explain(copy=j.copy, rows=j.rows)
    assert j.copy.verdict == "memorizing"
    assert why.reasons[0].checks[0].name == "copy_share_formed"
    assert why.text().startswith("memorizing: copies among well-formed samples 0.75 against 0.5")
    assert why.samples["copies"] == [1, 2, 3] and "copies: samples 1, 2, 3 (3 of 4)" in why.samples_text()


def test_noise_names_the_noise_samples_and_the_set_test_its_measure(cats):
    train, heldout, ref = cats
    rng = random.Random(0)
    texts = [_noise(rng) for _ in range(12)] + heldout[:4]
    j = judge(ref, texts)
    why = explain(copy=j.copy, rows=j.rows)
    assert j.copy.verdict == "noise" and why.reasons[0].checks[0].name == "noise_rate"
    assert why.samples["noise"][:12] == list(range(12))
    noise_rate = next(c for c in j.copy.evidence.checks if c.name == "noise_rate")
    assert why.text().startswith(f"noise: noise rate {noise_rate.value:.3g} against 0.5")
    # the set test fired too: it is named with its measure and p-value, as "also"
    also = [c for c in why.reasons[0].also if c.name == "set_noise"]
    assert also and "bits, p " in also[0].text
    # and the stored analysis is not touched by explaining it
    assert all("bits, p" not in c.text for c in j.copy.evidence.checks)


def test_loops_are_explained_by_the_judge_version_that_added_them(cats):
    """Judge version 3 added a loop check and a 'looping' flag; this module explains them as it found them."""
    _, heldout, ref = cats
    lines = heldout[1].split("\n")
    loop = "\n".join(lines[:2] + [lines[2]] * 6)  # a cat whose third line is written six times
    j = judge(ref, [loop, loop, loop, heldout[0]])
    why = explain(copy=j.copy, rows=j.rows)
    assert j.copy.verdict == "looping" and why.reasons[0].checks[0].name == "loop_rate"
    assert why.text() == "looping: loop rate 0.75 against 0.5. Samples: looping: samples 0, 1, 2 (3 of 4)"


def test_a_set_that_repeats_lines_names_the_repeated_line_test_its_measure_and_p_value(cats):
    """Each piece with one line doubled: no sample loops, but as a set they repeat where human cats do not."""
    _, heldout, ref = cats
    doubled = []
    for text in heldout:
        lines = text.split("\n")
        doubled.append("\n".join(lines[:2] + lines[1:]))  # the second line written twice
    j = judge(ref, doubled)
    why = explain(copy=j.copy, rows=j.rows)
    checks = [c for c in why.reasons[0].checks + why.reasons[0].also if c.name == "set_loop"]
    assert j.copy.verdict != "novel" and checks, why.text()
    assert "repeated-line set test effect" in checks[0].text and "(repeated line share, p " in checks[0].text
    assert all("share, p" not in c.text for c in j.copy.evidence.checks)  # the stored analysis is not touched


def test_novel_says_every_check_passed_with_the_checks_that_would_have_refused_it(cats):
    _, heldout, ref = cats
    j = judge(ref, heldout)
    why = explain(copy=j.copy, rows=j.rows)
    assert j.copy.verdict == "novel" and why.reasons[0].passed
    names = [c.name for c in why.reasons[0].checks]
    assert names[0] == "copy_rate_novel" and names[-1] == "copied_lines"  # the clause that refuses "novel"
    assert why.text().startswith("novel: every check passed (copy rate (novel at most) 0 against 0.1")


def test_the_run_verdict_names_the_rule_that_decided(cats):
    _, heldout, ref = cats
    j = judge(ref, heldout)
    steps = [0, 10, 20, 30]
    memorizing = verdict.analyse(steps, [2.0, 1.5, 1.0, 0.5], [2.0, 1.8, 2.0, 2.4])
    final = verdict.combine_verdicts(memorizing, j.copy)
    why = explain(j.copy, memorizing, j.rows, final.verdict)
    assert final.verdict == "memorizing" and [r.rule for r in why.reasons] == ["loss curves"]
    named = {c.name for c in why.reasons[0].checks}
    assert named == {"heldout_rise", "train_fall_after_min"}  # both halves of the clause, not the ratio alone
    assert "held-out rise above its minimum 0.333 against 0.05" in why.text()
    undertrained = verdict.analyse(steps, [2.0, 1.99, 1.98, 1.97], [2.1, 2.09, 2.08, 2.07])
    why = explain(None, undertrained, [], "undertrained")
    assert why.text() == "undertrained: train loss drop 0.015 against 0.1"
    learning = verdict.analyse(steps, [2.0, 1.5, 1.2, 1.0], [2.1, 1.7, 1.5, 1.4])
    assert explain(None, learning).text() == "learning: every check passed (train loss drop 0.5 against 0.1)"


def test_a_check_added_to_a_rule_is_explained_without_a_change():
    """A rule with a new check in its place (a loop check between copies and noise, as a judge version may add)."""
    def rule(fired: dict[str, bool]) -> str:
        if fired["copies"]:
            return "memorizing"
        if fired.get("loop_rate"):
            return "looping"
        if fired["noise_rate"]:
            return "noise"
        return "mixed" if fired["novelty"] else "novel"

    def c(name: str, value: float, fired: bool) -> RuleCheck:
        return RuleCheck(name, value, 0.5, True, fired, 0.0, False, f"{name} {value:g} against 0.5")

    checks = [c("copies", 0.1, False), c("loop_rate", 0.7, True), c("noise_rate", 0.6, True), c("novelty", 1, True)]
    reason = decided_by(checks, rule, "looping")
    assert [x.name for x in reason.checks] == ["loop_rate"] and reason.also == []  # noise alone says noise, not this
    assert reason.clause() == "looping: loop_rate 0.7 against 0.5"


def test_a_sample_flag_added_to_the_judge_is_named(monkeypatch):
    monkeypatch.setattr(explain_module, "SAMPLE_FLAGS", (*verdict.SAMPLE_FLAGS, "stuttering"))
    rows = [{"index": 0, "stuttering": True}, {"index": 1, "cut_off": True}, {"index": 2, "stuttering": True}]
    why = explain_module.Explanation("looping", [], explain_module.sample_groups(rows), 3)
    assert why.samples == {"cut_off": [1], "stuttering": [0, 2]}  # in SAMPLE_FLAGS order, not the samples'
    assert why.samples_text() == "cut off: sample 1 (1 of 3); stuttering: samples 0, 2 (2 of 3)"


def test_score_and_generate_print_the_clause_and_the_samples(cats, capsys):
    from types import SimpleNamespace

    from harness.cli.generate import _score
    from harness.config import RunConfig

    train, heldout, _ = cats
    rows = [{"index": i, "text": t, "cut_off": False} for i, t in enumerate([train[0], train[1], heldout[0]])]
    _score(rows, SimpleNamespace(cfg=RunConfig()), None)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("copy verdict: "))
    assert line.startswith("copy verdict: memorizing: copies among well-formed samples 0.667 against 0.5")
    assert "samples behind it (numbered from 0): copies: samples 0, 1 (2 of 3)" in out
    assert "invalid if < 50%" not in out  # not the whole rule: the clause that decided


def test_the_run_summary_and_the_report_say_why(cats, tmp_path):
    from run_fixture import make_run

    from harness.cli.run import verdict_lines
    from harness.report.story import verdict_sentence
    from harness.results import write_jsonl

    train, heldout, ref = cats
    run = make_run(tmp_path / "run", bench=False)
    v = run.variants["r8"]
    j = judge(ref, [train[0], *heldout[:3]], meta=[{"index": i} for i in range(4)])
    v.loss_analysis = verdict.analyse([0, 10, 20], [2.0, 1.6, 1.3], [2.1, 1.8, 1.6])
    v.copy_analysis, v.verdict = j.copy, verdict.combine_verdicts(v.loss_analysis, j.copy)
    write_jsonl(tmp_path / "run" / v.samples_file, [r.to_dict() for r in j.rows])
    run.save(tmp_path / "run")
    assert v.verdict.verdict == "mixed"  # one copy in four: more than novel allows
    line = next(x for x in verdict_lines(run, tmp_path / "run") if x.startswith("r8: "))
    assert line == ("r8: mixed: copy rate (novel at most) 0.25 against 0.1. Samples: copies: sample 0 (1 of 4)")
    sentence = "".join(text for text, _ in verdict_sentence(run, v, [r.to_dict() for r in j.rows]))
    assert sentence.endswith(" Why: mixed: copy rate (novel at most) 0.25 against 0.1. Samples: copies: sample 0 "
                             "(1 of 4).")


def test_export_score_says_why_each_format_is_judged_as_it_is(cats, tmp_path):
    from harness.cli.export import verdict_lines
    from harness.results import ExportRecord, write_jsonl

    train, heldout, ref = cats
    j = judge(ref, [train[0], train[1], heldout[0]], meta=[{"index": i} for i in range(3)])
    write_jsonl(tmp_path / "samples-merged.jsonl", [r.to_dict() for r in j.rows])
    scored = {"merged": ExportRecord(format="merged", copy_analysis=j.copy, samples_file="samples-merged.jsonl"),
              "gguf:q8_0": ExportRecord(format="gguf:q8_0")}  # exported, not judged: nothing to explain
    assert verdict_lines(scored, tmp_path) == [
        "merged: memorizing: copies among well-formed samples 0.667 against 0.5; also copy rate 0.667 against 0.5. "
        "Samples: copies: samples 0, 1 (2 of 3)"]
