"""Tests for harness.judge.score and harness.cli.score on hand-made cases and the real catsart pieces."""
from __future__ import annotations

import argparse
import json
import random
import string
import subprocess
import sys

import numpy as np
import pytest

from harness.cli.common import print_table
from harness.cli.score import add_parser, score_rows
from harness.config import DataConfig
from harness.data import build_dataset, normalize
from harness.errors import UserError
from harness.judge import score
from harness.judge.samples import read_pieces, read_samples
from harness.judge.score import (
    diversity,
    human_reference,
    novelty,
    percentile_of,
    reference_distribution,
    score_pieces,
    validity,
    width_consistency,
)
from harness.judge.verdict import combine_verdicts, copy_verdict
from harness.results import CopyAnalysis, Metric

CAT = " /\\_/\\\n( o.o )\n > ^ <"


@pytest.fixture(scope="module")
def cats():
    """The real catsart split, as (train texts, held-out texts)."""
    ds = build_dataset(DataConfig())
    return [p.text for p in ds.train], [p.text for p in ds.heldout]


@pytest.fixture(scope="module")
def human(cats):
    train, heldout = cats
    return human_reference(heldout, train)


def cut_lines_short(text: str, rng: random.Random, share: float = 0.3) -> str:
    """Cut about `share` of the lines to a random shorter length, as a broken generator might."""
    out = []
    for line in text.split("\n"):
        if line.strip() and len(line) > 1 and rng.random() < share:
            line = line[: rng.randint(1, len(line) - 1)]
        out.append(line.rstrip())
    return "\n".join(out)


def random_characters(rng: random.Random) -> str:
    """A random-character generator: uniform printable ASCII with a line break every 20-60 characters."""
    lines = ["".join(rng.choice(string.printable[:95]) for _ in range(rng.randint(20, 60)))
             for _ in range(rng.randint(4, 12))]
    return "\n".join(lines)


# ---------------------------------------------------------------- width consistency

def test_width_consistency_edge_cases():
    assert width_consistency("") == 0.0
    assert width_consistency("   \n\n") == 0.0
    assert width_consistency("just one line") == 1.0
    assert width_consistency("#####\n#####\n#####") == 1.0
    # widths 2, 4 -> ratio 0.5; blank lines in between are skipped, not counted as width 0
    assert width_consistency("##\n\n\n####") == pytest.approx(0.5)
    # the common indent is normalized away first, so indenting a piece does not change its score
    assert width_consistency(CAT) == pytest.approx(width_consistency("\n".join("      " + x for x in CAT.split("\n"))))


def test_cut_lines_score_lower_width_consistency(cats):
    train, heldout = cats
    rng = random.Random(1234)
    lower, drops = [], []
    for text in train + heldout:
        cut = cut_lines_short(text, rng)
        if score._widths(cut) == score._widths(text):
            continue  # nothing was cut (a 3-line piece often keeps every line): no change to score
        before, after = width_consistency(text), width_consistency(cut)
        lower.append(after < before)
        drops.append(before - after)
    assert len(lower) > 100  # the comparison covers most of catsart's ~180 pieces, not a handful
    # A cut can by chance trim a line that stuck out and bring it nearer its neighbours, so not
    # every piece drops. "Large majority" is taken as a round 3 in 4, well under the ~0.96 seen
    # with several seeds, so a seed cannot flip it. On average the drop must be clearly positive
    # (0.05 is under a third of the ~0.18 mean drop seen): a cut line is a jump between neighbours.
    assert np.mean(lower) >= 0.75
    assert np.mean(drops) > 0.05


def test_reference_and_percentile():
    ref = reference_distribution(["##\n####", "####\n####", CAT])
    assert ref == sorted(ref) and len(ref) == 3
    assert percentile_of(0.5, [0.25, 0.5, 0.75, 1.0]) == 50.0  # weak: values <= 0.5 count
    assert percentile_of(0.0, [0.25, 0.5]) == 0.0
    assert percentile_of(2.0, [0.25, 0.5]) == 100.0
    with pytest.raises(ValueError):
        percentile_of(0.5, [])


# ---------------------------------------------------------------- novelty

def test_copied_training_piece_is_exact_copy(cats):
    train, _ = cats
    (r,) = novelty([train[5]], train)
    assert r["nearest_train_index"] == 5
    assert r["novelty"] == 0.0 and r["similarity"] == 1.0
    assert r["exact_copy"] and not r["near_copy"]


def test_whitespace_changes_still_exact_copy(cats):
    train, _ = cats
    # the comparison is on whitespace-collapsed text: re-indenting a copy does not hide it
    (r,) = novelty(["\n".join("  " + line + "   " for line in train[7].split("\n"))], train)
    assert r["exact_copy"] and r["nearest_train_index"] == 7


def test_one_character_changed_is_near_copy(cats):
    train, _ = cats
    # pick a piece of >= 20 visible characters: one edit leaves similarity >= 1 - 1/20 = 0.95,
    # far above NEAR_COPY_SIMILARITY, so this checks the flag, not the threshold
    i = next(k for k, t in enumerate(train) if len("".join(t.split())) >= 20)
    text = train[i]
    pos = next(k for k, c in enumerate(text) if not c.isspace())
    edited = text[:pos] + ("X" if text[pos] != "X" else "Y") + text[pos + 1:]
    (r,) = novelty([edited], train)
    assert r["near_copy"] and not r["exact_copy"]
    assert r["nearest_train_index"] == i and 0.85 <= r["similarity"] < 1.0


def test_heldout_pieces_are_not_copies(cats):
    train, heldout = cats
    results = novelty(heldout, train)
    assert not any(r["exact_copy"] or r["near_copy"] for r in results)
    # data.py keeps pieces >= 0.6 similar on one side of the split, so no held-out piece can be that close
    assert max(r["similarity"] for r in results) < 0.6


def test_pruned_search_matches_full_cdist(cats):
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    from harness.data import collapse_whitespace

    train, heldout = cats
    rng = random.Random(11)
    queries = [collapse_whitespace(t) for t in heldout + [cut_lines_short(rng.choice(train), rng) for _ in range(40)]]
    choices = [collapse_whitespace(t) for t in train]
    found = score._nearest(queries, choices)
    sims = process.cdist(queries, choices, scorer=Levenshtein.normalized_similarity, dtype=np.float64)
    for q, row in zip(queries, sims, strict=True):
        assert found[q] == (int(row.argmax()), pytest.approx(row.max(), abs=1e-12))
    floor = {q: 0.45 for q in queries}  # with a floor: the same answer where it is beaten, else nothing
    for q, row in zip(queries, sims, strict=True):
        want = (int(row.argmax()), pytest.approx(row.max(), abs=1e-12)) if row.max() > 0.45 + 1e-5 else (-1, -1.0)
        assert score._nearest([q], choices, floor)[q] == want


def test_the_first_lines_of_a_longer_training_piece_are_a_copy(cats):
    train, heldout = cats
    i = next(k for k, t in enumerate(train) if len(score.visible_lines(t)) >= 12)
    (r,) = novelty(["\n".join(score.visible_lines(train[i])[:4])], train)  # its head, drawn and stopped
    assert r["similarity"] < 0.85 and r["head_similarity"] == 1.0  # the whole piece is far longer
    assert r["head_train_index"] == i and r["near_copy"] and not r["exact_copy"]
    assert r["novelty"] == 1.0 - r["similarity"]  # novelty stays whole-piece (COPY_HEADS)
    assert not any(r["head_similarity"] for r in novelty(heldout, train))  # recorded only for a copy


def test_copied_line_share():
    train = ["( o.o )\n  |||  \n/ sad \\", "=====\n=====\n====="]
    (r,) = novelty(["( o.o )\n( x.x )\n=====\nab"], train)
    # non-trivial lines: "( o.o )" (copied) and "( x.x )" (new); "=====" is one repeated character
    # and "ab" is shorter than 5, so neither counts
    assert r["copied_line_share"] == pytest.approx(0.5)
    assert novelty(["ab"], train)[0]["copied_line_share"] == 0.0


def test_novelty_needs_training_pieces():
    with pytest.raises(UserError):
        novelty([CAT], [])


# ---------------------------------------------------------------- validity

def test_validity_flags():
    assert validity(CAT)["valid"]
    empty = validity("")
    assert empty["empty"] and not empty["valid"]
    assert validity(" /\\_/\\\n( o.o )")["too_few_lines"]
    assert validity(CAT + "\x07")["non_printable"]
    assert not validity(CAT.replace(" ", "\t"))["non_printable"]  # tabs are expanded by normalize
    assert validity(CAT + " é")["non_ascii"] and not validity(CAT + " é")["valid"]
    assert validity(CAT, cut_off=True)["cut_off"] and not validity(CAT, cut_off=True)["valid"]


def test_prose_is_invalid():
    prose = ("Here is a drawing of a cat for you.\nI hope you like it, it took a while!\n"
             "Cats are wonderful animals and very independent.")
    v = validity(prose)
    assert v["prose"] and not v["valid"] and not v["noise"]  # English is far below the noise entropy
    # a caption over a drawing is not prose: the drawing holds most of the characters
    assert not validity("   A cat by Joan\n" + CAT + "\n" + CAT)["prose"]


def test_real_pieces_are_valid(cats):
    train, heldout = cats
    # the flags must not fire on real art; the only expected failure is a non-ASCII character,
    # which catsart does contain in one piece
    for text in train + heldout:
        v = validity(text)
        assert v["valid"] or (v["non_ascii"] and sum(v[k] for k in v if k != "valid") == 1), text


def test_random_characters_are_noise(cats, human):
    train, _ = cats
    rng = random.Random(7)
    samples = [random_characters(rng) for _ in range(40)]
    scores = score_pieces(samples, train)  # cut_off left False: the content alone must give it away
    assert not any(s["valid"] for s in scores.per_sample)
    assert all(s["noise"] and s["well_formed"] for s in scores.per_sample)  # shaped like art, but noise
    assert copy_verdict(scores.per_sample, human).verdict == "noise"


def test_metrics_are_over_their_populations(cats, human):
    train, heldout = cats
    prose = "Here is a drawing of a cat for you.\nI hope you like it, it took a while!\nCats are wonderful animals."
    s = score_pieces(heldout[:6] + [prose] * 4 + [""] * 2, train)
    assert s.populations["valid_rate"] == "all" and s.metrics["valid_rate"].n == 12
    for name in ("novelty", "width_consistency", "exact_copy_rate", "copied_line_share", "duplicate_rate"):
        assert s.populations[name] == "valid" and s.metrics[name].n == 6, name
    # the prose's novelty (~0.9) would pull the mean up; over the valid pieces it is the held-out pieces' own
    assert s.value("novelty") == pytest.approx(score_pieces(heldout[:6], train).value("novelty"))
    assert "typical_rate" not in s.metrics  # no calibrated character model passed: no typicality
    assert human.populations["typical_rate"] == "well-formed" and human.metrics["typical_rate"].n == len(heldout)
    only_prose = score_pieces([prose] * 3, train)
    assert only_prose.value("valid_rate") == 0 and only_prose.value("novelty") is None
    assert only_prose.metrics["novelty"].n == 0


# ---------------------------------------------------------------- diversity

def test_diversity():
    d = diversity([CAT, CAT, CAT, CAT])
    assert d.duplicate_rate == 0.75 and d.mean_pairwise_distance == 0.0
    assert diversity(["abcde"]).distinct_ngrams == 1.0  # "abcd", "bcde"
    assert diversity(["aaaaa"]).distinct_ngrams == 0.5  # "aaaa" twice
    one = diversity(["x"])
    assert one.mean_pairwise_distance is None and one.distinct_ngrams is None
    assert diversity([]).duplicate_rate is None


def test_diversity_pair_sampling_close_to_exact(cats, monkeypatch):
    train, _ = cats
    exact = diversity(train[:60])
    monkeypatch.setattr(score, "MAX_PAIRS", 600)
    sampled = diversity(train[:60])
    assert sampled.pairs_sampled and sampled.pairs == 600
    # 600 of 1770 pairs: the mean of distances with sd ~0.1 is off by ~0.1/sqrt(600) = 0.004; allow 5x
    assert sampled.mean_pairwise_distance == pytest.approx(exact.mean_pairwise_distance, abs=0.02)


# ---------------------------------------------------------------- score_pieces and verdicts

def test_score_pieces_format(cats):
    train, heldout = cats
    s = score_pieces(heldout[:10] + [""], train, cut_off=[False] * 10 + [True])
    assert len(s.per_sample) == 11
    for m in s.metrics.values():
        assert isinstance(m, Metric)
        assert set(vars(m)) == {"value", "stderr", "ci_low", "ci_high", "n", "higher_is_better"}
        if m.ci_low is not None:
            assert m.ci_low <= m.value <= m.ci_high
    assert s.metrics["cut_off_rate"].value == pytest.approx(1 / 11)
    assert s.value("cut_off_rate") == pytest.approx(1 / 11) and s.value("no_such_metric") is None
    assert s.per_sample[-1]["empty"] and s.per_sample[-1]["novelty"] == 1.0
    assert 0 <= s.per_sample[0]["width_percentile"] <= 100
    assert score_pieces(heldout[:10], train).metrics == score_pieces(heldout[:10], train).metrics  # seeded
    with pytest.raises(ValueError):
        score_pieces(heldout[:2], train, cut_off=[True])


def test_metric_small_samples():
    empty = score.metric([], True)
    assert empty.value is None and empty.n == 0
    one = score.metric([0.4], False)
    assert one.value == 0.4 and one.stderr is None and one.ci_low == one.ci_high == 0.4
    two = score.metric([0.0, 1.0], True)
    assert two.stderr == pytest.approx(0.5) and 0.0 <= two.ci_low <= two.ci_high <= 1.0


def test_copy_machine_is_memorizing(cats, human):
    train, _ = cats
    rng = random.Random(3)
    samples = [rng.choice(train) for _ in range(60)]
    v = copy_verdict(score_pieces(samples, train).per_sample, human)
    assert v.verdict == "memorizing" and v.evidence.copy_rate == 1.0


def test_heldout_pieces_are_novel(cats, human):
    train, heldout = cats
    assert copy_verdict(score_pieces(heldout, train).per_sample, human).verdict == "novel"


def test_some_copies_are_mixed(cats, human):
    train, heldout = cats
    # 8 copies among 31 samples = 26%: above the 10% a novel model may show, below the 50% of memorizing
    v = copy_verdict(score_pieces(heldout + train[:8], train).per_sample, human)
    assert v.verdict == "mixed"


@pytest.mark.parametrize(("loss", "copy", "want"), [
    ("learning", "novel", "learning"), ("undertrained", "novel", "undertrained"),
    ("memorizing", "novel", "memorizing"), ("learning", "memorizing", "memorizing"),
    ("memorizing", "invalid", "memorizing"), ("memorizing", "noise", "memorizing"), ("learning", "invalid", "invalid"),
    ("learning", "noise", "noise"), ("undertrained", "noise", "noise"), ("learning", "mixed", "mixed"),
    ("undertrained", "mixed", "undertrained")])
def test_combine_verdicts(loss, copy, want):
    out = combine_verdicts(loss, CopyAnalysis(verdict=copy))
    assert out.verdict == want and out.loss_verdict == loss and out.copy_verdict == copy


def test_combine_verdicts_rejects_unknown():
    with pytest.raises(ValueError):
        combine_verdicts("great", CopyAnalysis(verdict="novel"))


def test_score_table(cats, human):
    from rich.console import Console

    train, _ = cats
    headers, rows = score_rows({"samples": score_pieces([CAT], train), "human reference": human})
    assert headers == ["metric", "better", "over", "samples", "human reference"]
    assert {"novelty", "valid_rate", "typical_rate"} <= {r[0] for r in rows}
    assert next(r for r in rows if r[0] == "novelty")[2] == "valid"
    # one sample has no pairs: its mean_pairwise_distance cell shows "-" while the human one has a number
    row = next(r for r in rows if r[0] == "mean_pairwise_distance")
    assert row[3] == "-" and float(row[4].split()[0]) > 0
    console = Console(record=True, width=200)
    print_table(headers, rows, out=console)
    table = console.export_text()
    assert "human reference" in table and "novelty" in table and "valid_rate" in table
    printed = next(line for line in table.split("\n") if "mean_pairwise_distance" in line)
    cells = [c.strip() for c in printed.strip("│┃| ").split("│")]
    assert cells[3] == "-" and float(cells[4].split()[0]) > 0


# ---------------------------------------------------------------- reading files

def test_read_text_single_blank_separators(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text(f"{CAT}\n\n{CAT}\n \t\n  x\n y\n", encoding="utf-8")  # a whitespace-only line is blank
    assert [normalize(p) for p in read_pieces(f)] == [CAT, CAT, " x\ny"]


def test_read_text_double_blank_separators_keep_inner_blank(tmp_path):
    f = tmp_path / "s.txt"
    inner = CAT + "\n\n" + CAT
    f.write_text(f"{inner}\n\n\n{CAT}\n\n\n\n{CAT}\n", encoding="utf-8")
    assert [normalize(p) for p in read_pieces(f)] == [inner, CAT, CAT]


def test_read_jsonl(tmp_path):
    f = tmp_path / "s.jsonl"
    rows = [{"text": CAT, "cut_off": False}, {"ascii": "a\nb", "cut_off": True}, {"text": "", "cut_off": False}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert read_samples(f) == ([CAT, "a\nb", ""], [False, True, False])
    g = tmp_path / "t.jsonl"
    g.write_text(json.dumps(CAT) + "\n" + json.dumps({"text": "x"}) + "\n", encoding="utf-8")
    assert read_samples(g) == ([CAT, "x"], None)  # cut_off flags only when every record has one


@pytest.mark.parametrize(("name", "content"), [
    ("missing.txt", None), ("latin1.txt", "caf\xe9\n/\\_/\\".encode("latin-1")), ("empty.txt", b"\n \n"),
    ("bad.jsonl", b'{"text": "a"}\n{nope\n'), ("nokey.jsonl", b'{"art": "a"}\n'), ("empty.jsonl", b"")])
def test_read_pieces_user_errors(tmp_path, name, content):
    f = tmp_path / name
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_pieces(f)
    assert "\n" not in str(err.value)  # one sentence for the CLI to print


# ---------------------------------------------------------------- command line and imports

def _score_cli(tmp_path, pieces: list[str], *flags: str) -> int:
    """`asciitune score` on the pieces written to a .txt file, its JSON written to tmp_path/o.json."""
    samples = tmp_path / "s.txt"
    samples.write_text("\n\n".join(pieces) + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["score", str(samples), *flags, "--json", str(tmp_path / "o.json")])
    return args.func(args)


def test_score_cli(tmp_path, capsys, cats):
    train, _ = cats
    assert _score_cli(tmp_path, train[:5], "--train", "cats") == 0
    printed = capsys.readouterr().out
    assert "human reference" in printed and "copy verdict: memorizing" in printed
    out = json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))
    assert out["copy_verdict"]["verdict"] == "memorizing" and len(out["rows"]) == 5


def test_without_the_human_reference_score_says_what_valid_rate_then_counts(tmp_path, capsys, cats):
    train, _ = cats
    assert _score_cli(tmp_path, train[:3], "--no-human-reference") == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "no typicality model and no copy verdict: noise is the entropy rule alone, so valid_rate counts" in printed
    assert "not comparable with a valid_rate scored with the reference" in printed
    assert "valid_rate" in json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))["note"]


def test_score_imports_no_torch():
    code = "import sys, harness.judge.score, harness.cli.score; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_generate_score_path_judges_like_its_run_or_like_score(capsys, cats):
    from types import SimpleNamespace

    from harness.cli.generate import _score
    from harness.config import RunConfig

    train, heldout = cats
    rows = [{"index": i, "text": t, "cut_off": False} for i, t in enumerate(heldout[:6])]
    src = SimpleNamespace(cfg=RunConfig())
    out = _score(rows, src, None)  # the source config's data: its training pieces, held-out human reference
    printed = capsys.readouterr().out
    assert f"the {len(train)} training pieces of 'cats'" in printed and "copy verdict: novel" in printed
    assert all("typicality_percentile" in r and not r["exact_copy"] for r in out)
    _score(rows, src, "cats")  # --train cats: all of it is training, so held-out pieces are copies
    printed = capsys.readouterr().out
    assert "all 215 pieces of 'cats'" in printed and "copy verdict: memorizing" in printed
