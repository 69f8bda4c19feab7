"""Tests for harness.judge.typicality on built cases: the real cats, and banners rendered by pyfiglet.

No third-party art is stored here: the cats come from the installed catsart package and the
banners are rendered at test time (one word per pyfiglet font), both through harness.data.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.config import DataConfig
from harness.data import build_dataset, normalize, variant_groups
from harness.judge import reference
from harness.judge import typicality as typ
from harness.judge.verdict import typicality_evidence
from harness.results import to_jsonable

REPO = Path(__file__).resolve().parent.parent
SYMBOLS = "#@!%&*$?+~^"
ART_CHARS = "/\\|_()-=o."
BANNER_WORDS = ("Cat", "Moo", "Art", "Owl", "Fox", "Yak", "Elk", "Bee", "Ant", "Emu")


# ---------------------------------------------------------------- built cases

def random_lines(rng: random.Random, alphabet: str, n: int = 30) -> list[str]:
    """n pieces of 4-9 lines of 8-20 characters drawn uniformly from `alphabet`."""
    return ["\n".join("".join(rng.choice(alphabet) for _ in range(rng.randint(8, 20)))
                      for _ in range(rng.randint(4, 9))) for _ in range(n)]


def character_noise(rng: random.Random, train: list[str], n: int = 30) -> list[str]:
    """Training pieces' shapes (line lengths) filled with characters drawn from all training pieces."""
    chars = [c for t in train for c in normalize(t) if c != "\n"]
    shapes = [[len(line) for line in normalize(rng.choice(train)).split("\n")] for _ in range(n)]
    return ["\n".join("".join(rng.choice(chars) for _ in range(w)) for w in shape) for shape in shapes]


def shuffled_lines(rng: random.Random, pieces: list[str], n: int = 30) -> list[str]:
    """4-12 lines, each taken from a randomly chosen real piece."""
    lines = [normalize(p).split("\n") for p in pieces]
    return ["\n".join(rng.choice(rng.choice(lines)) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def edited(rng: random.Random, train: list[str], n: int = 30) -> list[str]:
    """Training pieces with 1-3 characters changed: a copy machine."""
    out = []
    for text in rng.sample(train, min(n, len(train))):
        chars = list(normalize(text))
        for _ in range(rng.randint(1, 3)):
            chars[rng.choice([i for i, c in enumerate(chars) if c != "\n"])] = rng.choice(ART_CHARS + "#")
        out.append("".join(chars))
    return out


def build_cases(train: list[str], heldout: list[str]) -> dict[str, list[str]]:
    rng = random.Random(0)
    return {"symbols": random_lines(rng, SYMBOLS + " "), "art_characters": random_lines(rng, ART_CHARS + " " * 4),
            "character_noise": character_noise(rng, train), "shuffled_lines": shuffled_lines(rng, heldout),
            "heldout": heldout, "edited": edited(rng, train)}


def banners() -> list[str]:
    """One word per pyfiglet font, kept when it is printable ASCII of 3-12 lines at most 60 wide."""
    pyfiglet = pytest.importorskip("pyfiglet", reason="the banner corpus needs pyfiglet (pip install pyfiglet)")
    out = []
    for i, font in enumerate(sorted(pyfiglet.FigletFont.getFonts())):
        text = normalize(pyfiglet.figlet_format(BANNER_WORDS[i % len(BANNER_WORDS)], font=font, width=200))
        lines = text.split("\n")
        if (text.isascii() and all(c.isprintable() for c in text.replace("\n", "")) and 3 <= len(lines) <= 12
                and max(map(len, lines)) <= 60 and len(set(text) - set(" \n")) >= 3):
            out.append(text)
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict:
    """Per corpus: (train texts, held-out texts, built cases), split by harness.data as in a run."""
    cats = build_dataset(DataConfig())
    out = {"cats": ([p.text for p in cats.train], [p.text for p in cats.heldout])}
    try:
        folder = tmp_path_factory.mktemp("banners")
        for i, text in enumerate(banners()):
            (folder / f"{i:03d}.txt").write_text(text, encoding="utf-8")
        ds = build_dataset(DataConfig(source=str(folder)))
        out["banners"] = ([p.text for p in ds.train], [p.text for p in ds.heldout])
    except pytest.skip.Exception:
        pass
    return {name: (train, held, build_cases(train, held)) for name, (train, held) in out.items()}


def judge(corpora: dict, corpus: str, mode: str, case: str):
    """(per-sample rows, typicality evidence) of a built case: in a run (held-out reference) or external (LOGO)."""
    if corpus not in corpora:
        pytest.skip("the banner corpus needs pyfiglet (pip install pyfiglet)")
    train, held, cases = corpora[corpus]
    if mode == "run":
        ref = reference.split(train, held)
    else:  # variant_similarity's default, as harness.data groups pieces for the split
        ref = reference.external(train, variant_groups(train, DataConfig().variant_similarity))
    rows = ref.score(cases[case]).per_sample
    return rows, typicality_evidence(rows, ref.human.per_sample)


def atypical_share(rows: list[dict]) -> float:
    return float(np.mean([r["atypical"] for r in rows]))


def rank_test_of(evidence, measure: str):
    return next(t for t in evidence.tests if t.measure == measure)


# ---------------------------------------------------------------- verdicts on built cases

CORPORA_MODES = [(c, m) for c in ("cats", "banners") for m in ("run", "external")]


@pytest.mark.parametrize("corpus,mode", CORPORA_MODES)
@pytest.mark.parametrize("case,min_atypical", [("symbols", 0.9), ("art_characters", 0.6)])
def test_random_characters_are_noise_per_sample_and_as_a_set(corpora, corpus, mode, case, min_atypical):
    # measured: symbols 100% atypical everywhere; art characters 73% (cats, external) to 100%
    rows, evidence = judge(corpora, corpus, mode, case)
    assert atypical_share(rows) >= min_atypical
    assert evidence.set_noise


@pytest.mark.parametrize("corpus,mode", CORPORA_MODES)
@pytest.mark.parametrize("case", ["character_noise", "shuffled_lines"])
def test_structureless_noise_is_noise_as_a_set(corpora, corpus, mode, case):
    _, evidence = judge(corpora, corpus, mode, case)
    assert evidence.set_noise


@pytest.mark.parametrize("corpus,mode", CORPORA_MODES)
def test_shuffled_lines_are_caught_by_vertical_coherence(corpora, corpus, mode):
    # one line at a time they are real art (cross-entropy alone: effect 0.70-0.86, below the bar);
    # what gives them away is the line above, which no longer predicts them
    vertical = rank_test_of(judge(corpora, corpus, mode, "shuffled_lines")[1], "vertical_bits")
    assert vertical.flagged
    assert vertical.median_samples < -0.5 < vertical.median_human


@pytest.mark.parametrize("corpus,mode", CORPORA_MODES)
@pytest.mark.parametrize("case", ["heldout", "edited"])
def test_real_pieces_and_copies_are_typical(corpora, corpus, mode, case):
    rows, evidence = judge(corpora, corpus, mode, case)
    assert atypical_share(rows) <= 0.1
    assert not evidence.set_noise


def test_copies_are_more_typical_than_unseen_pieces(corpora):
    copies = judge(corpora, "cats", "run", "edited")[0]  # the set test leaves copies out: compare the rows
    human = judge(corpora, "cats", "run", "heldout")[0]
    assert np.median([r["cross_entropy_bits"] for r in copies]) < np.median([r["cross_entropy_bits"] for r in human])


# ---------------------------------------------------------------- the model

def test_line_above_is_context():
    # Stripes (every line the same random string) and rows (each line a fresh random string) have
    # the same characters and the same horizontal statistics; only the stripes' line above predicts.
    rng = random.Random(1)
    row = lambda: "".join(rng.choice("/\\|_-=o") for _ in range(12))  # noqa: E731
    stripes = lambda: "\n".join([row()] * 6)  # noqa: E731
    model = typ.CharModel().fit([stripes() for _ in range(40)])
    striped = model.measure([stripes() for _ in range(10)])
    rows = model.measure(["\n".join(row() for _ in range(6)) for _ in range(10)])
    assert striped["cross_entropy_bits"].max() < rows["cross_entropy_bits"].min()
    assert striped["vertical_bits"].min() > 0 > rows["vertical_bits"].max()


def test_fit_is_deterministic_and_scores_every_character(corpora):
    train, held, _ = corpora["cats"]
    a, b = typ.CharModel().fit(train), typ.CharModel().fit(list(train))
    assert np.array_equal(a.measure(held)["cross_entropy_bits"], b.measure(held)["cross_entropy_bits"])
    bits, text_of = a.char_bits(held[:3])
    assert len(bits["2d"]) == sum(len(normalize(t)) + 1 for t in held[:3])  # every character and end of line
    assert np.all(np.isfinite(bits["2d"])) and np.all(bits["2d"] > 0)
    assert np.median(a.measure(train)["cross_entropy_bits"]) < np.median(a.measure(held)["cross_entropy_bits"])


def test_unseen_characters_get_a_probability():
    model = typ.CharModel().fit([" /\\_/\\\n( o.o )\n > ^ <"])
    assert np.isfinite(model.cross_entropy("ñ€\U0001f431\n\x00\ud83d"))


def test_leave_group_out_matches_refitting(corpora):
    train, held, _ = corpora["cats"]
    texts = [t for t in train + held if t.isascii()]  # same alphabet with or without any group
    groups = np.array(variant_groups(texts, DataConfig().variant_similarity))
    fast = typ.CharModel().fit(texts).measure(texts, list(groups))
    for label in np.unique(groups)[:: max(1, len(np.unique(groups)) // 12)]:
        inside = np.flatnonzero(groups == label)
        refit = typ.CharModel().fit([texts[i] for i in np.flatnonzero(groups != label)])
        slow = refit.measure([texts[i] for i in inside])
        for key in ("cross_entropy_bits", "structure_bits", "vertical_bits"):
            np.testing.assert_allclose(fast[key][inside], slow[key], rtol=1e-12)


def test_leave_group_out_needs_the_fitted_texts():
    model = typ.CharModel().fit(["ab\ncd", "ef\ngh"])
    with pytest.raises(ValueError, match="fitted on"):
        model.measure(["ab\nzz"], [0])


def test_unfitted_model_is_an_error():
    with pytest.raises(ValueError, match="not fitted"):
        typ.CharModel().measure(["x"])


def test_repeated_texts_and_normalized_input_score_the_same(corpora):
    train, held, _ = corpora["cats"]
    model = typ.fitted(train)
    assert typ.fitted(list(train)) is model  # one fit per training set and process
    once = model.measure(held[:5])
    twice = model.measure(held[:5] + held[:5])  # a copy machine's repeats are scored once
    norm = model.measure([normalize(t) for t in held[:5]], normalized=True)
    for key in ("cross_entropy_bits", "vertical_bits"):
        assert np.array_equal(np.r_[once[key], once[key]], twice[key]) and np.array_equal(once[key], norm[key])


# ---------------------------------------------------------------- the rank test and the result format

def test_rank_test_known_values():
    # U, effect and the asymptotic p-value as scipy.stats.mannwhitneyu computes them
    t = typ.rank_test([5, 6, 7], [1, 2, 3, 4])
    assert (t["statistic"], t["effect"]) == (12.0, 1.0)
    assert t["p_value"] == pytest.approx(0.025915, abs=1e-6)
    t = typ.rank_test([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], "less")
    assert t["p_value"] == pytest.approx(0.0060929, abs=1e-6)


def test_rank_test_ties_and_edges():
    x, y = [1, 2, 2, 3], [2, 2, 4]
    t = typ.rank_test(x, y)
    brute = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    assert t["statistic"] == brute and t["effect"] == pytest.approx(brute / 12)
    assert typ.rank_test([1, 1], [1, 1])["p_value"] == 1.0
    assert typ.rank_test([], [1.0])["p_value"] is None


def test_result_format(corpora):
    train, held, cases = corpora["cats"]
    ref = reference.split(train, held)
    rows = ref.score(cases["symbols"][:5] + held[:5]).per_sample
    row = rows[0]
    assert row["typicality_percentile"] == 100.0 and row["atypical"] and "cross_entropy" in row["atypical_reasons"]
    assert row["noise"] and not row["valid"] and row["well_formed"]
    evidence = typicality_evidence(rows, ref.human.per_sample)
    json.dumps(to_jsonable(evidence))  # typed, and plain JSON in results.json
    assert evidence.typical_rate.n == 10 and evidence.typical_rate.value == pytest.approx(0.5)
    assert {t.measure for t in evidence.tests} == {m for m, _ in typ.MEASURES}
    assert evidence.thresholds["max_cross_entropy_bits"] > evidence.human_cross_entropy_bits.value
    assert typicality_evidence(ref.score([""]).per_sample, ref.human.per_sample).set_noise is False


def test_scoring_is_fast(corpora):
    train, held, cases = corpora["cats"]
    train200 = (train * 2)[:200]
    samples = (cases["art_characters"] + held * 5)[:100]
    start = time.perf_counter()
    typ.calibrate(typ.CharModel().fit(train200), typ.fitted(train200).measure(held))[0].rows(samples)
    assert time.perf_counter() - start < 1.0  # measured 0.05 s on 2 cores


def test_imports_no_torch():
    code = "import sys, harness.judge.typicality, harness.judge.reference; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
