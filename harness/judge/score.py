"""Score generated ASCII art: width consistency, novelty against the training set, typicality, validity, diversity.

    asciitune score samples.jsonl --train cats --json scores.json

Pure Python (numpy + rapidfuzz), no torch, so it runs on results from anywhere. Every
similarity is rapidfuzz's normalized Levenshtein similarity on whitespace-collapsed text,
the same measure `harness.data` uses to de-duplicate and group pieces. Samples are passed
through `harness.data.normalize` first, exactly as training pieces were.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from itertools import pairwise

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from harness.data import collapse_whitespace, normalize
from harness.errors import UserError
from harness.judge import typicality
from harness.judge.typicality import Calibrated
from harness.results import Diversity, Metric, Scores

# harness.data drops pieces >= 0.85 similar as "the same drawing with small edits": catsart's
# nearest-neighbour similarities leave an empty band between 0.80 and 0.85, so 0.85 separates
# edits of one drawing from redrawings. A sample that close to a training piece is a copy.
NEAR_COPY_SIMILARITY = 0.85
# COPY_HEADS: a sample of k non-blank lines is also compared with the first k non-blank lines of each longer
# training piece: a model that draws a training cat's head and stops has copied it, yet the length gap alone
# caps its similarity to the whole piece (4 of 12 lines: about 1/3). The first 3-6 lines of the default run's
# 48 training cats, 1-3 characters changed: 0.60-0.76 similar to the whole pieces (7-40% copies: "mixed"),
# 0.93-0.96 to the heads; of unseen cats at most 0.57 to the heads (2026-12-01, tests/test_judge_cases.py).
# Only a head copy (>= 0.85, closer than any whole piece) is recorded, as head_similarity (the copy rule takes
# the larger: verdict.copy_similarity). Novelty stays whole-piece: heads give short pieces more chances to be
# close (unseen cats' first 3 lines: 0.36 -> 0.40), which would bias the novelty comparison against short art.
# A line shorter than this, or one repeated character, is generic ("/\_/\", "-----") and shared
# by many unrelated drawings, so finding it in the training set is no evidence of copying.
MIN_COPY_LINE_LENGTH = 5
MIN_LINES = 3  # fewer non-blank lines cannot draw anything; catsart's smallest pieces have 3
# Prose: >= 60% of non-space characters in word-like tokens and >= 5 of them. Art's word tokens
# are captions and signatures, a small share of a drawing; five words make a sentence.
PROSE_WORD_SHARE = 0.6
PROSE_MIN_WORDS = 5
_WORD = re.compile(r"[A-Za-z]{2,20}[.,!?;:]?")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # ASCII controls but newline (tabs are expanded first)
_RUN3 = re.compile(r"([A-Za-z])\1\1")  # "aaaa" fills shapes in art; words almost never triple a letter
# Character entropy (bits, newlines excluded) above which a text is noise: catsart's most varied
# piece has 4.05 bits and English prose about 4.4 (the Zen of Python: 4.43), while uniform
# printable ASCII has log2(95) = 6.57 (about 5.2 already at 50 characters). 5.0 sits between.
NOISE_ENTROPY_BITS = 5.0
NGRAM = 4  # character 4-grams: long enough to span a stroke pattern like "/__\", short enough to recur
MAX_PAIRS = 10_000  # pairs for mean pairwise distance; beyond, a seeded sample (error ~ sd/100 ~ 0.001)
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
WORKERS = 1  # rapidfuzz threads: one, so scoring never competes with a training job for cores


# ---------------------------------------------------------------- per-piece measures

def _widths(text: str) -> list[int]:
    return [len(line.rstrip()) for line in text.split("\n") if line.strip()]


def _width_consistency(norm: str) -> float:
    w = _widths(norm)
    if len(w) < 2:
        return float(len(w))  # 0.0 empty, 1.0 one line
    return float(np.mean([min(a, b) / max(a, b) for a, b in pairwise(w)]))


def width_consistency(text: str) -> float:
    """Mean over adjacent non-blank lines of min(w_i, w_i+1) / max(w_i, w_i+1), w = visible width.

    Visible width is the length of a line after normalize() and rstrip, indentation included;
    blank lines are skipped (lines either side count as adjacent). Drawn outlines change width
    gradually from one line to the next, so ragged-but-smooth cats score high (catsart median
    0.92) while lines cut short at random make jumps and score lower. Comparing neighbours
    rather than each width to the widest line keeps one long tail or caption from dominating.
    One non-blank line scores 1.0 (nothing to be inconsistent with); an empty text scores 0.0.
    """
    return _width_consistency(normalize(text))


def reference_distribution(train_texts: list[str]) -> list[float]:
    """Width consistency of every training piece, sorted: the reference for percentile_of."""
    return sorted(width_consistency(t) for t in train_texts)


def percentile_of(value: float, reference: list[float]) -> float:
    """Percentage (0-100) of reference values <= value (scipy's percentileofscore, kind='weak')."""
    if not len(reference):
        raise ValueError("reference is empty")
    return 100.0 * float(np.count_nonzero(np.asarray(reference) <= value)) / len(reference)


def nontrivial_line(line: str) -> bool:
    """Whether a line counts for copied-line share: >= 5 characters stripped, not one repeated character."""
    s = line.strip()
    return len(s) >= MIN_COPY_LINE_LENGTH and len(set(s)) > 1


# Similarities within 1e-6 count as ties (lowest index wins). rapidfuzz pads a score_cutoff by
# a small imprecision allowance, so a cutoff a hair (1e-9) under a pair's similarity can still
# reject it; 1e-6 never did in 3,000 random catsart pairs, and it moves no score by more than 1e-6.
_TIE = 1e-6


def _nearest(queries: list[str], choices: list[str], floor: dict[str, float] | None = None
             ) -> dict[str, tuple[int, float]]:
    """Exact nearest choice (index, similarity) of each distinct query; ties go to the lowest index.

    floor: per query, a similarity to beat by more than a tie, else the query gets (-1, -1.0).
    Candidates are tried in order of an upper bound, min(len)/max(len) (a length gap alone costs
    that many edits), with the best similarity so far as rapidfuzz's score_cutoff so hopeless
    pairs exit early; the search stops once the bound falls below the best. Same answer as a
    full cdist argmax, several times faster when samples are close to training pieces.
    """
    found: dict[str, tuple[int, float]] = {}
    for j, c in enumerate(choices):
        found.setdefault(c, (j, 1.0))
    lengths = np.array([len(c) for c in choices], dtype=np.float64)
    for q in dict.fromkeys(queries):
        if q in found:
            continue
        bound = np.minimum(lengths, len(q)) / np.maximum(np.maximum(lengths, len(q)), 1.0)
        least = floor[q] + 2 * _TIE if floor else -1.0  # a choice must beat the floor by more than a tie
        best, best_j = least, -1
        for j in np.argsort(-bound, kind="stable").tolist():
            if bound[j] < best - _TIE:
                break
            s = Levenshtein.normalized_similarity(q, choices[j], score_cutoff=max(best - _TIE, 0.0))
            if s > best + _TIE or (s >= best - _TIE and j < best_j):
                best, best_j = max(s, best), j
        found[q] = (best_j, best) if best_j >= 0 else (-1, -1.0)
    return found


def visible_lines(text: str) -> list[str]:
    """The non-blank lines of a text."""
    return [line for line in text.split("\n") if line.strip()]


def heads(pool_norm: list[str], k: int) -> tuple[list[int], list[str]]:
    """(indices, collapsed first k non-blank lines) of the pool pieces that have more than k of them."""
    lines = [visible_lines(t) for t in pool_norm]
    longer = [j for j, ls in enumerate(lines) if len(ls) > k]
    return longer, [collapse_whitespace("\n".join(lines[j][:k])) for j in longer]


def _head_nearest(norm: list[str], collapsed: list[str], pool_norm: list[str],
                  whole: dict[str, tuple[int, float]]) -> list[tuple[int | None, float | None]]:
    """Per sample: its head copy (index, similarity) as COPY_HEADS says, else (None, None)."""
    ks = [len(visible_lines(t)) for t in norm]
    found: dict[tuple[int, str], tuple[int, float]] = {}
    for k in sorted(set(ks) - {0}):
        longer, cut = heads(pool_norm, k)
        queries = [c for c, n in zip(collapsed, ks, strict=True) if n == k and whole[c][1] < 1.0]
        if longer and queries:  # a floor of 0.85 (within a tie) lets most comparisons exit early
            floor = {q: max(whole[q][1], NEAR_COPY_SIMILARITY - 4 * _TIE) for q in queries}
            for q, (i, s) in _nearest(queries, cut, floor).items():
                if i >= 0:
                    found[k, q] = (longer[i], s)
    return [found.get((k, c), (None, None)) for k, c in zip(ks, collapsed, strict=True)]


def _novelty(norm: list[str], train_norm: list[str]) -> list[dict]:
    if not train_norm:
        raise UserError("There are no training pieces to compare samples with: check the --train data.")
    train_lines = {line.strip() for t in train_norm for line in t.split("\n") if nontrivial_line(line)}
    collapsed_train = [collapse_whitespace(t) for t in train_norm]
    exact = set(collapsed_train)
    collapsed = [collapse_whitespace(s) for s in norm]
    nearest = _nearest(collapsed, collapsed_train)
    out = []
    for text, c, (hj, hs) in zip(norm, collapsed, _head_nearest(norm, collapsed, train_norm, nearest), strict=True):
        j, s = nearest[c]
        lines = [line.strip() for line in text.split("\n") if nontrivial_line(line)]
        out.append({"nearest_train_index": j, "similarity": s, "novelty": 1.0 - s, "exact_copy": c in exact,
                    "near_copy": c not in exact and max(s, hs or 0.0) >= NEAR_COPY_SIMILARITY,
                    "head_train_index": hj, "head_similarity": hs,
                    "copied_line_share": sum(line in train_lines for line in lines) / len(lines) if lines else 0.0})
    return out


def novelty(samples: list[str], train_texts: list[str]) -> list[dict]:
    """Nearest training piece, similarity, novelty, head copy, exact/near copy and copied-line share per sample.

    `near_copy` excludes exact copies, so exact_copy + near_copy counts every copy once; a head
    copy (COPY_HEADS: head_train_index, head_similarity) is a near copy too.
    copied_line_share is the share of a sample's non-trivial lines (stripped length >= 5 and
    not one repeated character) found verbatim, stripped, in some training piece; 0.0 when it
    has none. An empty sample has similarity 0 and novelty 1: check validity before novelty.
    """
    return _novelty([normalize(s) for s in samples], [normalize(t) for t in train_texts])


def _entropy_bits(text: str) -> float:
    counts = Counter(text)
    counts.pop("\n", None)
    if not counts:
        return 0.0
    p = np.fromiter(counts.values(), dtype=np.float64)
    p /= p.sum()
    return float(-(p * np.log2(p)).sum())


def _is_prose(text: str) -> bool:
    tokens = text.split()
    words = [t for t in tokens if _WORD.fullmatch(t) and not _RUN3.search(t)]
    chars = sum(map(len, tokens))
    return len(words) >= PROSE_MIN_WORDS and sum(map(len, words)) >= PROSE_WORD_SHARE * chars


# A well-formed output is shaped like a piece of art: every failure flag but noise is off. Noise is
# judged among well-formed outputs (typicality), the other failures are failures of form.
FORM_FLAGS = ("empty", "too_few_lines", "non_printable", "non_ascii", "prose", "cut_off")


def _validity(t: str, cut_off: bool) -> dict:
    non_ascii = not t.isascii()
    flags = {
        "empty": not t.strip(),
        "too_few_lines": len(_widths(t)) < MIN_LINES,
        "non_printable": bool(_CONTROL.search(t)) or (non_ascii and any(
            unicodedata.category(c)[0] == "C" for c in t if ord(c) > 0x7F)),
        "non_ascii": non_ascii,
        "prose": _is_prose(t),
        "noise": _entropy_bits(t) > NOISE_ENTROPY_BITS,
        "cut_off": bool(cut_off),
    }
    return {"valid": not any(flags.values()), **flags}


def validity(text: str, cut_off: bool = False) -> dict:
    """Failure flags of one output and `valid` = none of them, measured after normalize().

    empty: no visible character. too_few_lines: < 3 non-blank lines. non_printable: a control,
    format or unassigned character other than newline (tabs and CR are normalized away).
    non_ascii: a character above U+007F. prose: >= 5 word-like tokens ([A-Za-z]{2,20} plus
    optional punctuation, no letter tripled) holding >= 60% of non-space characters. noise:
    character entropy > 5.0 bits, i.e. closer to random characters than to art or prose (in
    score_pieces, with a calibrated character model, also: atypical for the training art).
    cut_off: passed in, generation hit max_new_tokens before EOS.
    """
    return _validity(normalize(text), cut_off)


def _diversity(c: list[str]) -> Diversity:
    n = len(c)
    total = max(n * (n - 1) // 2, 0)
    if total <= MAX_PAIRS:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        i = rng.integers(0, n, MAX_PAIRS)
        j = (i + rng.integers(1, n, MAX_PAIRS)) % n  # never a sample with itself
    mpd = None
    if len(i):
        sims = process.cpdist([c[k] for k in i], [c[k] for k in j], scorer=Levenshtein.normalized_similarity,
                              dtype=np.float64, workers=WORKERS)
        mpd = float(1.0 - sims.mean())
    n_grams = sum(max(len(s) - NGRAM + 1, 0) for s in c)
    distinct = len({s[k:k + NGRAM] for s in c for k in range(len(s) - NGRAM + 1)})
    return Diversity(duplicate_rate=(n - len(set(c))) / n if n else None, mean_pairwise_distance=mpd,
                     distinct_ngrams=distinct / n_grams if n_grams else None, n=n, pairs=int(len(i)),
                     pairs_sampled=total > MAX_PAIRS)


def diversity(samples: list[str]) -> Diversity:
    """Duplicate rate, mean pairwise normalized edit distance and distinct 4-gram share.

    All on whitespace-collapsed text. duplicate_rate: share of samples equal to an earlier one.
    mean_pairwise_distance: mean of 1 - similarity over all pairs, or over MAX_PAIRS seeded
    random pairs when there are more. distinct_ngrams: distinct character 4-grams over all
    4-grams, each sample's 4-grams counted within that sample. None where undefined.
    """
    return _diversity([collapse_whitespace(normalize(s)) for s in samples])


# ---------------------------------------------------------------- aggregation

def _summaries(columns: list[list[float]], higher_is_better: list[bool]) -> list[Metric]:
    """metric() for several equally long columns, sharing one set of bootstrap resamples."""
    x = np.asarray(columns, dtype=np.float64).reshape(len(columns), -1).T  # (n, k)
    n = x.shape[0]
    if n == 0:
        return [Metric(n=0, higher_is_better=h) for h in higher_is_better]
    rng = np.random.default_rng(BOOTSTRAP_SEED)  # per call: an interval never depends on call order
    rows = np.arange(100)[:, None] * n
    # 100 resamples at a time bounds memory; each resample's mean is (how often each value was drawn) @ x / n,
    # one small matrix product instead of gathering k columns of n values 1,000 times
    means = np.concatenate([np.bincount((rows + rng.integers(0, n, (100, n))).ravel(), minlength=100 * n)
                            .reshape(100, n) @ x / n for _ in range(BOOTSTRAP_RESAMPLES // 100)])
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    sd = x.std(axis=0, ddof=1) if n > 1 else [None] * x.shape[1]
    return [Metric(float(x[:, k].mean()), float(sd[k] / math.sqrt(n)) if n > 1 else None, float(lo[k]),
                   float(hi[k]), n, h) for k, h in enumerate(higher_is_better)]


def metric(values: list[float], higher_is_better: bool, weights: list[float] | None = None) -> Metric:
    """Mean with stderr and a seeded 95% percentile-bootstrap interval (the fixed metric format).

    weights: a weighted mean instead, its bootstrap drawing values in proportion to their weights (n draws each),
    stderr the bootstrap means' sd: what a reference reweighted to the samples' lengths gives (length_weights).
    """
    if weights is None:
        return _summaries([values], [higher_is_better])[0]
    x, w = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if not len(x) or w.sum() <= 0:
        return Metric(n=0, higher_is_better=higher_is_better)
    p = w / w.sum()
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = x[rng.choice(len(x), size=(BOOTSTRAP_RESAMPLES, len(x)), p=p)].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Metric(float(p @ x), float(means.std(ddof=1)), float(lo), float(hi), int(np.count_nonzero(w)),
                  higher_is_better)


LENGTH_BINS = 4  # quantile bins of the human pieces' lengths for length_weights


def length_weights(human_chars: list[int], sample_chars: list[int]) -> list[float] | None:
    """Weights that give the human pieces the samples' length distribution: per quantile bin of the human lengths,
    the samples' share over the human pieces' share (0 where no sample is that long). None when either is empty.

    Length moves novelty (catsart's shortest third of pieces 0.51, the longest 0.61, leave-one-drawing-out): short
    samples judged against long human pieces would look less novel for their length alone."""
    if not human_chars or not sample_chars:
        return None
    h, smp = np.asarray(human_chars, dtype=np.float64), np.asarray(sample_chars, dtype=np.float64)
    edges = np.unique(np.quantile(h, np.linspace(0, 1, LENGTH_BINS + 1)[1:-1]))
    hb, sb = np.searchsorted(edges, h, "right"), np.searchsorted(edges, smp, "right")
    h_share = np.bincount(hb, minlength=len(edges) + 1) / len(h)
    s_share = np.bincount(sb, minlength=len(edges) + 1) / len(smp)
    return (s_share[hb] / h_share[hb]).tolist()


# Which samples each metric is computed over (its population, stored beside the metrics):
# "all": every output; validity and cut-off rates say how often generation fails.
# "valid": outputs with no failure flag; what the art is like (widths, novelty, copies, diversity).
#   The novelty of prose or noise says nothing about art: a run whose samples were all prose
#   scored 0.90 and one that drew cats 0.67, which made the cats look like a regression.
# "well-formed": outputs with no failure flag but noise; typicality must count the noise it detects.
POPULATIONS = ("all", "valid", "well-formed")
_PER_SAMPLE_METRICS = (  # (metric name, per-sample key, higher_is_better, population)
    ("width_consistency", "width_consistency", True, "valid"), ("novelty", "novelty", True, "valid"),
    ("exact_copy_rate", "exact_copy", False, "valid"), ("near_copy_rate", "near_copy", False, "valid"),
    ("copied_line_share", "copied_line_share", False, "valid"), ("valid_rate", "valid", True, "all"),
    ("cut_off_rate", "cut_off", False, "all"), ("loop_rate", "looping", False, "all"),
    # cross-entropy: lower is more like the training art, and copies are lowest of all, so read it
    # beside the copy rates; typical_rate is the share not flagged atypical (higher is better).
    ("typical_rate", "typical", True, "well-formed"),
    ("cross_entropy_bits", "cross_entropy_bits", False, "well-formed"))
_TYPICALITY_KEYS = ("typical", "cross_entropy_bits", "looping")  # measured only with a calibrated reference
_DIVERSITY_METRICS = (("duplicate_rate", False), ("mean_pairwise_distance", True), ("distinct_ngrams", True))


def in_population(row: dict, population: str) -> bool:
    """Whether a per-sample row belongs to a population of POPULATIONS."""
    if population == "valid":
        return bool(row["valid"])
    if population == "well-formed":
        return bool(row["well_formed"])
    return True


def summarize(per_sample: list[dict], collapsed: list[str]) -> Scores:
    """Metrics over each metric's population, and the valid pieces' diversity, from per-sample rows.

    `collapsed`: each piece whitespace-collapsed (for diversity). Typicality metrics appear only
    when the rows carry typicality measures.
    """
    metrics, populations = {}, {}
    measured = bool(per_sample) and "atypical" in per_sample[0]
    for population in POPULATIONS:
        rows = [r for r in per_sample if in_population(r, population)]
        wanted = [(name, key, hib) for name, key, hib, pop in _PER_SAMPLE_METRICS
                  if pop == population and (measured or key not in _TYPICALITY_KEYS)]
        if not wanted:
            continue
        columns = [[float(not r["atypical"]) if key == "typical" else float(r[key]) for r in rows]
                   for _, key, _ in wanted]
        for (name, _, _), m in zip(wanted, _summaries(columns, [h for _, _, h in wanted]), strict=True):
            metrics[name], populations[name] = m, population
    div = _diversity([c for c, r in zip(collapsed, per_sample, strict=True) if r["valid"]])
    for name, hib in _DIVERSITY_METRICS:
        metrics[name], populations[name] = Metric(getattr(div, name), n=div.n, higher_is_better=hib), "valid"
    order = [n for n, *_ in _PER_SAMPLE_METRICS] + [n for n, _ in _DIVERSITY_METRICS]
    metrics = {n: metrics[n] for n in order if n in metrics}
    return Scores(metrics=metrics, diversity=div, per_sample=per_sample, populations=populations)


def sample_row(text: str, cut: bool, near: dict, widths: np.ndarray, typical: dict | None) -> dict:
    """One normalized piece's row: width, copy evidence, typicality (when measured) and validity flags.

    widths: the width-consistency reference, sorted.
    """
    wc = _width_consistency(text)
    flags = _validity(text, cut)
    # Atypical for the training art is noise too: neither art nor a failure of form. Not for a copy (exact, or at
    # least 0.85 similar to a training piece or to its first lines): it is training art, however odd its
    # statistics (the top half of a FIGlet banner or of a typeset formula is atypical on its own).
    # A piece that writes its lines again right after themselves beyond human art of its kind loops (typicality.flag,
    # harness.judge.repetition): not art either, and like noise never said of a copy.
    if typical is not None:
        copy = bool(near.get("exact_copy") or near.get("near_copy"))
        flags["noise"] = flags["noise"] or (typical["atypical"] and not copy)
        flags["looping"] = bool(typical.get("looping")) and not copy
        flags["valid"] = not any(v for k, v in flags.items() if k != "valid")
    well_formed = not any(flags[f] for f in FORM_FLAGS)
    percentile = 100.0 * float(np.searchsorted(widths, wc, "right")) / len(widths)  # percentile_of, widths sorted
    return {"width_consistency": wc, "width_percentile": percentile, "chars": len(text), **near, **(typical or {}),
            **flags, "well_formed": well_formed}


def score_pieces(samples: list[str], train_texts: list[str], cut_off: list[bool] | None = None,
                 reference: list[float] | None = None, typical: Calibrated | None = None,
                 pool: list[str] | None = None) -> Scores:
    """Per-sample scores, metrics with uncertainty over their populations, and diversity of a set of outputs.

    reference: the width-consistency reference (default: the training pieces'). typical: the
    training pieces' calibrated character model (harness.judge.typicality); without it there are
    no typicality measures and noise is the entropy rule alone. pool: where copies are looked for,
    nearest_train_index indexing it (default: train_texts; in a run, training pieces plus the near
    duplicates it left out). Populations (stored in Scores.populations): valid_rate and
    cut_off_rate over all samples; width_consistency, novelty, exact_copy_rate, near_copy_rate,
    copied_line_share and the diversity metrics over the valid ones; typical_rate and
    cross_entropy_bits over the well-formed ones (FORM_FLAGS all off).
    """
    if cut_off is not None and len(cut_off) != len(samples):
        raise ValueError(f"cut_off has {len(cut_off)} flags for {len(samples)} samples")
    flags = cut_off if cut_off is not None else [False] * len(samples)
    norm, train_norm = [normalize(s) for s in samples], [normalize(t) for t in train_texts]
    pool_norm = train_norm if pool is None else [normalize(t) for t in pool]
    widths = np.sort(np.asarray(reference if reference is not None else [_width_consistency(t) for t in train_norm]))
    if not len(widths):
        raise ValueError("reference is empty")
    typ_rows = typical.rows(norm, normalized=True) if typical is not None else [None] * len(norm)
    per_sample = [sample_row(text, cut, near, widths, t) for text, cut, near, t
                  in zip(norm, flags, _novelty(norm, pool_norm), typ_rows, strict=True)]
    return summarize(per_sample, [collapse_whitespace(t) for t in norm])


def human_reference(heldout_texts: list[str], train_texts: list[str], pool: list[str] | None = None) -> Scores:
    """score_pieces on held-out human pieces, typicality calibrated on them: what a non-memorized piece looks like."""
    model = typicality.fitted([normalize(t) for t in train_texts])
    calibrated, _ = typicality.calibrate(model, model.measure(heldout_texts))
    return score_pieces(heldout_texts, train_texts, typical=calibrated, pool=pool)
