"""The whole judge (scores, copy and combined verdicts) on built cases: three kinds of art, in a run and outside one.

The matrix (cases x kinds -> verdict), in a run (the split's training pieces, the cross-fitted human reference)
and outside one (`asciitune score --train`: all of DATA, leave-one-drawing-out):
- held-back real pieces (a sixth of the training groups, never trained on) -> novel;
- copies with small edits (training pieces, 1-3 characters changed) -> memorizing;
- first-lines copies (the first half of a training piece's lines, one character changed: a model that draws a
  training piece's top and stops) -> memorizing;
- symbol noise, noise of the art's own characters, and training lines shuffled across pieces -> noise, not novel;
- loops made from held-back pieces (a line written 4-8 times in a row, a fragment of 1-2 lines looped, a head that
  ends in its last line looped) -> looping.
The kinds are tests/art_kinds.py's, rendered at test time (no third-party art is stored here): catsart cats,
FIGlet banners of many words in a few fonts (a shared style), sympy's typeset formulas.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest
from art_kinds import KINDS, write_folder
from test_typicality import ART_CHARS, SYMBOLS, character_noise, edited, random_lines, shuffled_lines

from harness.config import DataConfig
from harness.data import build_dataset, build_pool, group_pieces, normalize
from harness.judge import reference, verdict
from harness.judge.score import visible_lines
from harness.results import CopyAnalysis

HELD_BACK_SHARE = 6  # one training group in six is held back from training: real pieces the model never saw
EXPECTED = {"held_back": "novel", "edited": "memorizing", "first_lines": "memorizing", "symbols": "noise",
            "own_characters": "noise", "shuffled_lines": "noise", "stuttered": "looping",
            "looped_fragment": "looping", "loop_ending": "looping"}
# combined with a "learning" loss
FINAL = {"memorizing": "memorizing", "noise": "noise", "looping": "looping", "novel": "learning"}
MODES = ("run", "external")


def first_lines(rng: random.Random, train: list[str], n: int = 30) -> list[str]:
    """The first half (at least 3) of the lines of training pieces of 6 or more lines, one character changed."""
    out = []
    for text in rng.sample([t for t in train if len(visible_lines(normalize(t))) >= 6], n):
        lines = visible_lines(normalize(text))
        chars = list("\n".join(lines[: max(3, len(lines) // 2)]))
        chars[rng.choice([i for i, c in enumerate(chars) if not c.isspace()])] = rng.choice(ART_CHARS)
        out.append("".join(chars))
    return out


def stuttered(rng: random.Random, pieces: list[str], least: int = 4, most: int = 8) -> list[str]:
    """Each piece with one of its lines written least-most times in a row (a small model's loop on one line)."""
    out = []
    for text in pieces:
        lines = visible_lines(normalize(text))
        i = rng.randrange(len(lines))
        out.append("\n".join(lines[:i] + [lines[i]] * rng.randint(least, most) + lines[i + 1:]))
    return out


def looped_fragment(rng: random.Random, pieces: list[str]) -> list[str]:
    """Each piece's lines up to a fragment of 1-2 of them, then the fragment 3-5 times and nothing after."""
    out = []
    for text in pieces:
        lines = visible_lines(normalize(text))
        i = rng.randrange(max(1, len(lines) - 2))
        out.append("\n".join(lines[:i] + lines[i:i + rng.randint(1, 2)] * rng.randint(3, 5)))
    return out


def loop_ending(rng: random.Random, pieces: list[str]) -> list[str]:
    """Each piece's first half (at least 2 lines), then its last line 3-8 more times: a head that ends in a loop."""
    out = []
    for text in pieces:
        lines = visible_lines(normalize(text))
        top = lines[:max(2, len(lines) // 2)]
        out.append("\n".join(top + [top[-1]] * rng.randint(3, 8)))
    return out


def corpus(cfg: DataConfig) -> dict:
    """The split's references (run and external) with a sixth of the training groups held back, and the cases."""
    ds, (pool, groups) = build_dataset(cfg), build_pool(cfg)
    group_of = {p.key: g for p, g in zip(pool, groups, strict=True)}
    train_groups = sorted({group_of[p.key] for p in ds.train})
    back = set(random.Random(1).sample(train_groups, len(train_groups) // HELD_BACK_SHARE))
    train = [p.text for p in ds.train if group_of[p.key] not in back]
    rng = random.Random(0)
    held_back = [p.text for p in pool if group_of[p.key] in back]
    cases = {"held_back": held_back, "edited": edited(rng, train),
             "first_lines": first_lines(rng, train), "symbols": random_lines(rng, SYMBOLS + " "),
             "own_characters": character_noise(rng, train), "shuffled_lines": shuffled_lines(rng, train),
             # loops of pieces never trained on: the loop is the only thing wrong with them
             "stuttered": stuttered(rng, held_back), "looped_fragment": looped_fragment(rng, held_back),
             "loop_ending": loop_ending(rng, held_back)}
    data = [p.text for p, g in zip(pool, groups, strict=True) if g not in back]
    return {"run": reference.split(train, [p.text for p in ds.heldout]),
            "external": reference.external(data, group_pieces(data).drawing), "cases": cases}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict:
    out = {}
    for kind, make in KINDS.items():
        if kind == "cats":
            out[kind] = corpus(DataConfig())
            continue
        try:
            folder = write_folder(make(), tmp_path_factory.mktemp(kind))
        except ImportError as exc:  # pyfiglet, sympy: the dev extras
            out[kind] = f"the {kind} need {exc.name} (pip install -e '.[dev]')"
            continue
        out[kind] = corpus(DataConfig(source=str(folder)))
    return out


def judged(corpora: dict, kind: str, mode: str, case: str) -> CopyAnalysis:
    """A case's copy verdict (after a skip where the kind's package is missing)."""
    if isinstance(corpora[kind], str):
        pytest.skip(corpora[kind])
    c = corpora[kind]
    ref = c[mode]
    return verdict.copy_verdict(ref.score(c["cases"][case]).per_sample, ref.human)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(EXPECTED))
def test_judge_case_matrix(corpora, kind, mode, case):
    copy = judged(corpora, kind, mode, case)
    assert copy.verdict == EXPECTED[case], (copy.evidence.typicality, copy.evidence.copy_rate)
    final = verdict.combine_verdicts("learning", copy)
    assert final.verdict == FINAL[copy.verdict]  # noise never combines to learning, whatever the loss curves say
    if EXPECTED[case] == "memorizing":  # a copy is training art, never noise: a copy machine's samples stay valid
        assert copy.evidence.valid_rate >= 0.9, copy.evidence.valid_rate  # measured 0.90-1.00
    rep = copy.evidence.repetition
    assert rep.human_loop_rate == 0.0  # no human piece of any kind loops by its own reference's limits (measured)
    if case == "held_back":  # unseen human art repeats lines as much as the reference does: no loops, no set test
        assert rep.loop_rate == 0.0 and not rep.set_loop and rep.test.effect < 0.6, rep  # measured 0.45-0.50
    if EXPECTED[case] == "looping":
        assert rep.loop_rate >= 0.55 and rep.set_loop, rep  # measured 0.59 (cats, a line 4-8 times) to 1.00


def test_noise_outranks_a_loss_verdict_other_than_memorizing():
    noise = CopyAnalysis(verdict="noise")
    for loss in ("learning", "undertrained"):  # a set of noise never combines to learning
        assert verdict.combine_verdicts(loss, noise).verdict == "noise"
    assert verdict.combine_verdicts("memorizing", noise).verdict == "memorizing"  # the loss evidence stands
    assert verdict.verdict_tier("noise") == verdict.verdict_tier("invalid") == 2


def head(text: str, k: int) -> str:
    return "\n".join(visible_lines(normalize(text))[:k])


# Issue 11: the default run's learn samples are short cat heads (4-8 lines) judged against longer human cats.
# Length alone must not decide: the first k lines of real held-back cats are novel, and the first k lines of
# training cats with 1-3 characters changed (a model that draws a training cat's head and stops) are copies;
# before judge.score.COPY_HEADS 3-40% of those were copies ("mixed").
@pytest.mark.parametrize("mode", ["run", "external"])
@pytest.mark.parametrize("k", [3, 4, 6])
def test_short_pieces_are_judged_by_what_they_copy_not_by_their_length(corpora, mode, k):
    c = corpora["cats"]
    ref = c[mode]
    unseen = [head(t, k) for t in c["cases"]["held_back"]]
    copy = verdict.copy_verdict(ref.score(unseen).per_sample, ref.human)
    # measured: 0-8% copies (catsart holds a few drawings that begin with another group's first lines)
    assert copy.verdict == "novel", copy.evidence
    heads = edited(random.Random(k), [head(t, k) for t in ref.train if len(visible_lines(t)) > k])
    copy = verdict.copy_verdict(ref.score(heads).per_sample, ref.human)
    assert copy.verdict == "memorizing" and copy.evidence.copy_rate >= 0.75  # measured 0.80-1.00


def test_unseen_cats_of_the_training_population_are_novel():
    # The default run's learn data: 48 training cats, 20 held-out cats of which none shares a line with
    # training (bootstrap interval [0, 0]). The training cats outside its 48 (a hashed subset), in groups it
    # did not train on, are real art it never saw; they share a few lines with training, which [0, 0] alone
    # called "mixed".
    cfg = DataConfig(max_train_pieces=48, max_piece_chars=600)
    ds, (pool, groups) = build_dataset(cfg), build_pool(cfg)
    group_of = {p.key: g for p, g in zip(pool, groups, strict=True)}
    trained = {group_of[p.key] for p in ds.train}
    chosen = {p.key for p in ds.train}
    rest = [p.text for p in build_dataset(DataConfig(max_piece_chars=600)).train
            if p.key not in chosen and group_of[p.key] not in trained]
    ref = reference.in_run(ds)
    copy = verdict.copy_verdict(ref.score(rest).per_sample, ref.human)
    # measured with the first 48 in source order: 97 cats, 0.028 (0.009-0.05); with the hashed 48: 93, 0.015
    # (0.004-0.030). The held-out cats alone shared no line ([0, 0]); the cross-fitted reference (every training
    # and held-out piece against 48 others) meets the shared ear lines as these cats do: 0.038 (0.013-0.069).
    assert len(rest) == 93 and copy.evidence.copied_line_share_valid.ci_low > 0.0
    assert copy.evidence.human_copied_line_share_valid.value > 0.0 and len(ref.human.per_sample) == 68
    assert copy.verdict == "novel", copy.evidence


def test_mostly_noise_beside_real_art_is_noise(corpora):
    c = corpora["cats"]
    samples = random_lines(random.Random(0), ART_CHARS + " " * 4)[:12] + c["cases"]["held_back"][:8]  # 60% noise
    copy = verdict.copy_verdict(c["run"].score(samples).per_sample, c["run"].human)
    # one by one the cross-fitted reference (210 human pieces, limits at their 1st/99th percentile) flags half of
    # the random-character pieces here; as a set they are unlike human art, and that decides
    assert copy.verdict == "noise" and copy.evidence.typicality.set_noise and copy.evidence.typicality.noise_rate > 0


def test_a_copy_of_a_dropped_variant_is_a_copy():
    ds = build_dataset(DataConfig(drop_near_duplicates=True))
    assert len(ds.dropped) == 26
    rng = random.Random(5)
    samples = edited(rng, [p.text for p in ds.dropped], n=26)  # the dropped variants, 1-3 characters changed
    ref = reference.in_run(ds)
    scored = ref.score(samples)
    copy = verdict.copy_verdict(scored.per_sample, ref.human)
    assert copy.verdict == "memorizing" and copy.evidence.copy_rate == 1.0
    nearest = {ref.pool[r["nearest_train_index"]] for r in scored.per_sample}
    assert len(nearest & {p.text for p in ds.dropped}) >= 20  # found as copies of the dropped pieces themselves
    # against the training pieces alone, some of them would pass for new drawings
    alone = reference.split([p.text for p in ds.train], [p.text for p in ds.heldout]).score(samples)
    assert sum(r["exact_copy"] or r["near_copy"] for r in alone.per_sample) < len(samples)


def test_external_scoring_treats_all_of_data_as_training(tmp_path, capsys):
    from harness.cli.score import add_parser

    ds = build_dataset(DataConfig())
    samples = tmp_path / "heldout.txt"
    samples.write_text("\n\n\n".join(p.text for p in ds.heldout) + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["score", str(samples), "--train", "cats", "--json", str(tmp_path / "o.json")])
    assert args.func(args) == 0
    out = json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))
    # in a run the held-out cats are the human reference (novel); for a model trained on all of DATA
    # they are training pieces, and a file of them is a copy machine
    assert out["copy_verdict"]["verdict"] == "memorizing" and out["data"]["n_pieces"] == 215
    assert "copy verdict: memorizing" in capsys.readouterr().out
    human = out["human_reference"]
    rows = human["per_sample"]
    assert len(rows) == 215  # every piece of DATA, each scored without its own drawing (itself, near duplicates)
    assert not any(r["exact_copy"] for r in rows)
    assert max(r["similarity"] for r in rows) < DataConfig().near_duplicate_similarity  # its drawing is left out
    # one catsart cat is the first 10 lines of a longer drawing that whole-piece grouping puts in another group:
    # the only near copy, found by its head (score.COPY_HEADS)
    (head,) = [r for r in rows if r["near_copy"]]
    assert head["head_similarity"] > 0.95 and head["similarity"] < 0.35
    assert human["metrics"]["valid_rate"]["value"] >= 0.95  # measured 0.981: 3 LOGO-atypical cats, 1 non-ASCII


def test_external_human_reference_is_leave_one_group_out():
    texts = [" /\\_/\\\n( o.o )\n > ^ <", " /\\_/\\\n( o.O )\n > ^ <", "  _\n (_)\n  |\n / \\", "[#]\n[#]\n[#]"]
    ref = reference.external(texts, [0, 0, 1, 2])
    near = [r["nearest_train_index"] for r in ref.human.per_sample]
    assert near[0] not in (0, 1) and near[1] not in (0, 1)  # the two faces are one group: neither sees the other
    assert all(r["similarity"] < 0.85 for r in ref.human.per_sample)
    # samples, though, are scored against every piece: a copy of the first face is a copy
    assert ref.score([texts[0]]).per_sample[0]["exact_copy"]


def test_new_words_in_the_same_fonts_are_novel_against_a_house_style(tmp_path):
    """`asciitune score NEW --train FOLDER` on a user's set with a house style: FIGlet banners of new words in the
    set's own fonts are new art of the same kind. Measured: with each piece's whole group of close variants left
    out of the human reference, the reference is more novel than the new words (its pieces never met a close
    variant, the new words do); leaving out only the drawing (itself and its near duplicates), it is less."""
    pyfiglet = pytest.importorskip("pyfiglet", reason="the banners need pyfiglet (pip install -e '.[dev]')")
    from art_kinds import BANNER_FONTS, banners

    from harness.judge.judge import judge

    # 14 new words x 2 of the set's fonts = 28 banners, as the user had. (A word one letter from a word of the set,
    # such as "Toad" beside "Road", draws a banner >= 0.85 similar to that one: a near copy by the data's own
    # definition, and the set itself holds such pairs; those words are not new art, so they are not used here.)
    words = ("Gnu", "Koi", "Jay", "Orca", "Puma", "Seal", "Swan", "Vole", "Wren", "Crab", "Dove", "Hawk", "Lynx",
             "Mole")
    new = [normalize(pyfiglet.Figlet(font=f, width=200).renderText(w)) for f in BANNER_FONTS[:2] for w in words]
    folder = write_folder(banners(), tmp_path / "house-style")
    pool, drawings = build_pool(DataConfig(source=str(folder)), unit="drawing")
    judged = judge(reference.external([p.text for p in pool], drawings), new)
    assert len(pool) == 185 and len(set(drawings)) < len(pool)  # near duplicates exist: drawings, not pieces
    assert judged.copy.verdict == "novel", judged.copy.evidence
    # Whole groups left out instead: human pieces never meet a close variant of themselves, so the reference
    # reads as more novel than the new words are (0.279 against 0.261; with drawings left out 0.227); novel
    # here only by an interval margin of 0.006, and "mixed" before lengths were matched.
    ev = judged.copy.evidence
    assert ev.human_novelty_valid.value < ev.novelty_valid.value
    _, groups = build_pool(DataConfig(source=str(folder)))
    by_group = judge(reference.external([p.text for p in pool], groups), new).copy.evidence
    assert by_group.human_novelty_valid.value > by_group.novelty_valid.value


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_line_doubled_in_every_piece_is_not_novel(corpora, kind):
    """Unseen pieces, each with one line written twice: under the per-sample limit one by one (a 5-line piece with
    one repeat is still art), but human art of the kind almost never does it, so as a set they are not novel."""
    if isinstance(corpora[kind], str):
        pytest.skip(corpora[kind])
    c = corpora[kind]
    samples = stuttered(random.Random(3), c["cases"]["held_back"], 2, 2)
    copy = verdict.copy_verdict(c["run"].score(samples).per_sample, c["run"].human)
    rep = copy.evidence.repetition
    # measured: loop rate 0-0.05, set test effect 0.97 (cats) to 1.00; the verdict mixed (cats, formulas) or, where
    # the doubled line also breaks the vertical structure the character model expects, noise (banners)
    assert rep.loop_rate <= 0.1 and rep.set_loop and rep.test.effect >= 0.9, rep
    assert copy.verdict in ("mixed", "noise"), copy.verdict


def test_a_real_adapters_loops_are_looping():
    """The default run's learn samples as judge version 2 called them novel (reports/examples/default-cpu of
    2026-12-02, kept in tests/golden): most are a fragment written again and again."""
    path = Path(__file__).parent / "golden" / "learn-samples-judge-v2.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    ds = build_dataset(DataConfig(max_piece_chars=200, max_train_pieces=0))  # learn's data in that run
    ref = reference.in_run(ds)
    copy = verdict.copy_verdict(ref.score([r["text"] for r in rows], [r["cut_off"] for r in rows]).per_sample,
                                ref.human)
    rep = copy.evidence.repetition
    assert copy.verdict == "looping" and rep.set_loop, rep  # measured: 8 of 16 loop, set test effect 0.93
    assert verdict.combine_verdicts("learning", copy).verdict == "looping"  # the loss curves do not rescue loops
    assert copy.evidence.valid_rate <= 0.5  # a looping sample is not valid art (0.88 under judge version 2)


@pytest.mark.parametrize("fmt", ["merged", "gguf-q8_0"])
def test_the_same_adapters_loops_after_export_are_not_novel(fmt):
    """Cases this judge was not built on: the same learn adapter exported (merged bf16; GGUF q8_0 in llama.cpp) and
    sampled 32 times at judge version 2's settings (reports/examples/export-quality of 2026-12-02, kept in
    tests/golden), which judge version 2 called novel in every format. Its loops come out of other sampling code."""
    path = Path(__file__).parent / "golden" / "export-samples-judge-v2.jsonl"
    rows = [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["format"] == fmt]
    ref = reference.in_run(build_dataset(DataConfig(max_piece_chars=200, max_train_pieces=0)))
    copy = verdict.copy_verdict(ref.score([r["text"] for r in rows], [r["cut_off"] for r in rows]).per_sample,
                                ref.human)
    rep = copy.evidence.repetition
    # measured: merged loop rate 0.66 (looping), q8_0 0.44 with set test effect 0.81 (mixed)
    assert len(rows) == 32 and copy.verdict in ("looping", "mixed") and rep.loop_rate > 0.3, rep
    assert verdict.combine_verdicts("learning", copy).verdict != "learning"
