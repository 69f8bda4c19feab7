"""Seeds as an axis: replicates in the plan, verdicts as distributions, borderline verdicts, and a gate that
weighs a change against the seeds' spread (pure: no training)."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
from run_fixture import make_run

from harness.config import load_plan
from harness.errors import UserError
from harness.judge import seeds
from harness.judge.verdict import analyse, combine_verdicts, tone
from harness.report.compare import compare
from harness.report.doc import word_class
from harness.results import RunResult


def test_seeds_make_named_replicates_that_differ_only_in_their_seeds():
    plan = load_plan("default", ["train.seeds=3"])
    assert list(plan.variants) == ["seed", "seed@s1", "seed@s2", "learn", "learn@s1", "learn@s2", "memorize",
                                   "memorize@s1", "memorize@s2"]
    learn, rep = plan.variants["learn"], plan.variants["learn@s2"]
    assert (rep.train.seed, rep.generate.seed) == (learn.train.seed + 2, learn.generate.seed + 2)
    assert rep.lora == learn.lora and rep.data == learn.data and rep.train.lr == learn.train.lr
    assert plan.seed_groups["learn@s2"] == "learn" and plan.seed_groups["learn"] == "learn"
    assert list(plan.only(["learn"]).variants) == ["learn", "learn@s1", "learn@s2"]
    # the number of seeds is not part of a replicate's identity: a run resumed with more seeds keeps what it has
    assert load_plan("default", ["train.seeds=5"]).variants["learn@s2"].hash() == rep.hash()
    assert load_plan("default").variants["learn"].hash() == learn.hash()
    with pytest.raises(UserError, match="train.seeds"):
        load_plan("default", ["train.seeds=0"])


def test_a_replicate_name_may_not_clash_with_a_variant(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[variants.a]\n"train.lr" = 1e-3\n[variants."a@s1"]\n"train.lr" = 2e-3\n')
    with pytest.raises(UserError, match="clashes with seed replicate 1 of 'a'"):
        load_plan(str(cfg), ["train.seeds=2"])


def _replicates(run: RunResult, name: str, verdicts: list[str]) -> RunResult:
    """The run with `name` replaced by len(verdicts) seed replicates with those final verdicts."""
    out = copy.deepcopy(run)
    base = out.variants.pop(name)
    for k, word in enumerate(verdicts):
        v = copy.deepcopy(base)
        v.name, v.seed_group = (name if k == 0 else f"{name}@s{k}"), name
        v.verdict.verdict = word
        v.scores.metrics["novelty"].value += 0.01 * k
        out.variants[v.name] = v
    out.seeds = seeds.summarize(out.variants)
    return out


def test_a_verdict_over_seeds_is_a_distribution(tmp_path: Path):
    run = _replicates(make_run(tmp_path, bench=False), "r8", ["learning", "memorizing", "learning", "learning"])
    s = run.seeds["r8"]
    assert (s.verdict, s.agreement, s.verdicts) == ("learning", "3/4", {"learning": 3, "memorizing": 1})
    assert seeds.describe(s) == "learning 3/4 (memorizing 1/4)"
    assert s.metrics["novelty"].n == 4 and s.metrics["novelty"].sd == pytest.approx(0.0129, abs=1e-4)
    assert seeds.majority(["learning", "memorizing"]) == "memorizing"  # a split vote reads as the worse one


# The loss rule's checks, on curves built to sit at or near each bound (train, held-out at 5 points).
CURVES = {
    "ratio growth 1.50 (memorizing, borderline)": ([5.0, 4.2, 3.6, 3.2, 3.0], [5.0, 4.6, 4.4, 4.3, 4.5 * 1.0]),
    "ratio growth 2.5 (memorizing, decisive)": ([5.0, 3.5, 2.5, 2.0, 1.6], [5.0, 4.6, 4.3, 4.1, 4.0]),
    "learning with room": ([5.0, 4.5, 4.1, 3.8, 3.6], [5.0, 4.7, 4.5, 4.3, 4.2]),
}


def test_a_verdict_near_a_bound_says_so():
    steps = [0, 6, 12, 18, 24]
    tr, ho = CURVES["ratio growth 1.50 (memorizing, borderline)"]
    la = analyse(steps, tr, ho)
    growth = next(c for c in la.checks if c.name == "ratio_growth")
    assert la.verdict == "memorizing" and growth.value == pytest.approx(1.5) and growth.borderline
    v = combine_verdicts(la, None)
    assert v.verdict == "memorizing" and v.borderline == [growth.text] and "ratio growth 1.5 against 1.5" in growth.text
    decisive = analyse(steps, *CURVES["ratio growth 2.5 (memorizing, decisive)"])
    assert decisive.verdict == "memorizing" and not combine_verdicts(decisive, None).borderline
    learning = analyse(steps, *CURVES["learning with room"])
    assert learning.verdict == "learning" and not combine_verdicts(learning, None).borderline


def test_noise_is_coloured_as_the_bad_verdict_it_is():
    assert tone("noise") == word_class("noise") == "bad"
    assert word_class("learning 4/5") == "good" and word_class("mixed") == "mid" and word_class("regression") == "bad"


def _single(run: RunResult, name: str, word: str, borderline: bool) -> RunResult:
    out = copy.deepcopy(run)
    out.variants[name].verdict.verdict = word
    out.variants[name].verdict.borderline = ["ratio growth 1.5 against 1.5"] if borderline else []
    return out


def test_one_seed_worse_verdict_fails_the_gate_only_when_decided_with_room(tmp_path: Path):
    a = make_run(tmp_path, run_id="a", bench=False)
    near = _single(a, "r8", "memorizing", borderline=True)
    far = _single(a, "r8", "memorizing", borderline=False)
    assert not compare([a, near]).failed  # what a reseed does to a verdict near its bound
    assert compare([a, far]).failed
    change = next(v for v in compare([a, near]).verdicts if v.metric == "verdict" and v.variant == "r8")
    assert change.b == "memorizing (borderline)" and change.change == "same tier"


def test_verdicts_over_seeds_fail_the_gate_when_the_shift_is_beyond_chance(tmp_path: Path):
    base = make_run(tmp_path, run_id="a", bench=False)
    a = _replicates(base, "r8", ["learning"] * 5)
    one_flip = _replicates(base, "r8", ["learning", "memorizing", "learning", "learning", "learning"])
    shifted = _replicates(base, "r8", ["memorizing"] * 4 + ["learning"])
    assert not compare([a, one_flip]).failed
    comp = compare([a, shifted])
    change = next(v for v in comp.verdicts if v.metric == "verdict" and v.variant == "r8")
    assert comp.failed and (change.a, change.b) == ("learning 5/5", "memorizing 4/5")
    assert seeds.shift_p(0, 5, 4, 5) < seeds.VERDICT_ALPHA < seeds.shift_p(0, 5, 1, 5)
    # a group against one seed: the group's majority against that seed's verdict
    assert compare([_single(base, "r8", "learning", False), shifted]).failed


def test_compare_across_judge_versions_judges_stored_samples_again_or_refuses(tmp_path: Path, monkeypatch):
    from harness.judge import rejudge
    from harness.judge.verdict import JUDGE_VERSION

    a = make_run(tmp_path / "a", run_id="a", bench=False)
    b = make_run(tmp_path / "b", run_id="b", bench=False)
    for v in b.variants.values():
        v.judge_version = JUDGE_VERSION
    for v in a.variants.values():
        v.judge_version = JUDGE_VERSION - 1
    judged_again = []
    monkeypatch.setattr(rejudge, "rejudge_variant",
                        lambda run, run_dir, v: judged_again.append(v.name) or dataclasses.replace(v, judge_version=99))
    runs = rejudge.same_judge([(a, tmp_path / "a"), (b, tmp_path / "b")])
    assert judged_again == ["r8", "r32"]  # run a's judged variants; b's are this judge's already; r64 failed
    assert {v.judge_version for v in runs[0].variants.values() if v.status == "done"} == {99}
    assert rejudge.same_judge([(b, tmp_path / "b"), (b, tmp_path / "b")]) == [b, b]  # one version: as they are
    (tmp_path / "a" / "samples-r8.jsonl").unlink()
    with pytest.raises(UserError, match="judged by judge version .* cannot be judged again .*samples file"):
        rejudge.same_judge([(a, tmp_path / "a"), (b, tmp_path / "b")])


def test_a_stored_variant_is_judged_again_from_its_run_folder():
    from harness.judge.rejudge import rejudge_variant
    from harness.judge.verdict import JUDGE_VERSION
    from harness.results import load

    example = Path(__file__).resolve().parent.parent / "reports" / "examples" / "default-cpu"
    run = load(example)
    v = run.variants["seed"]  # trained on the run's base data, so its data hash is the run's
    again = rejudge_variant(run, example, v)
    assert again.judge_version == JUDGE_VERSION and again.verdict.verdict == "invalid"  # prose, as it was judged
    assert again.loss_analysis.checks and again.copy_analysis.evidence.checks  # judged by this judge's rules
