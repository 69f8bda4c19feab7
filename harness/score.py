"""Score generated ASCII art: width consistency, novelty against the training set, validity, diversity.

    asciitune score samples.jsonl --train cats --json scores.json

Pure Python (numpy + rapidfuzz), no torch, so it runs on results from anywhere. Every
similarity is rapidfuzz's normalized Levenshtein similarity on whitespace-collapsed text,
the same measure `harness.data` uses to de-duplicate and group pieces. Samples are passed
through `harness.data.normalize` first, exactly as training pieces were.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from harness.data import collapse_whitespace, normalize
from harness.errors import UserError

# harness.data drops pieces >= 0.85 similar as "the same drawing with small edits": catsart's
# nearest-neighbour similarities leave an empty band between 0.80 and 0.85, so 0.85 separates
# edits of one drawing from redrawings. A sample that close to a training piece is a copy.
NEAR_COPY_SIMILARITY = 0.85
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
# copy_verdict thresholds, chosen from what the verdicts mean, not fitted to any run:
MIN_VALID_RATE = 0.5  # below half valid, the outputs are mostly failures and their novelty says nothing
MEMORIZING_COPY_RATE = 0.5  # half or more of all outputs are copies: the model mostly replays its data
# A generalizing model may still reproduce a few short, common pieces (a 3-line cat face can be
# drawn only so many ways), so 1 copy in 10 is tolerated before "novel" is refused.
NOVEL_MAX_COPY_RATE = 0.1
HUMAN_SIMILARITY_PERCENTILE = 95  # a copy must be closer to training than 95% of unseen human pieces
LOSS_VERDICTS = ("learning", "memorizing", "undertrained")


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


def _nontrivial(line: str) -> bool:
    s = line.strip()
    return len(s) >= MIN_COPY_LINE_LENGTH and len(set(s)) > 1


# Similarities within 1e-6 count as ties (lowest index wins). rapidfuzz pads a score_cutoff by
# a small imprecision allowance, so a cutoff a hair (1e-9) under a pair's similarity can still
# reject it; 1e-6 never did in 3,000 random catsart pairs, and it moves no score by more than 1e-6.
_TIE = 1e-6


def _nearest(queries: list[str], choices: list[str]) -> dict[str, tuple[int, float]]:
    """Exact nearest choice (index, similarity) of each distinct query; ties go to the lowest index.

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
        best, best_j = -1.0, -1
        for j in np.argsort(-bound, kind="stable").tolist():
            if bound[j] < best - _TIE:
                break
            s = Levenshtein.normalized_similarity(q, choices[j], score_cutoff=max(best - _TIE, 0.0))
            if s > best + _TIE or (s >= best - _TIE and j < best_j):
                best, best_j = max(s, best), j
        found[q] = (best_j, best)
    return found


def _novelty(norm: list[str], train_norm: list[str]) -> list[dict]:
    if not train_norm:
        raise UserError("There are no training pieces to compare samples with: check the --train data.")
    train_lines = {line.strip() for t in train_norm for line in t.split("\n") if _nontrivial(line)}
    collapsed_train = [collapse_whitespace(t) for t in train_norm]
    exact = set(collapsed_train)
    collapsed = [collapse_whitespace(s) for s in norm]
    nearest = _nearest(collapsed, collapsed_train)
    out = []
    for text, c in zip(norm, collapsed, strict=True):
        j, s = nearest[c]
        lines = [line.strip() for line in text.split("\n") if _nontrivial(line)]
        out.append({"nearest_train_index": j, "similarity": s, "novelty": 1.0 - s, "exact_copy": c in exact,
                    "near_copy": c not in exact and s >= NEAR_COPY_SIMILARITY,
                    "copied_line_share": sum(line in train_lines for line in lines) / len(lines) if lines else 0.0})
    return out


def novelty(samples: list[str], train_texts: list[str]) -> list[dict]:
    """Nearest training piece, similarity, novelty, exact/near copy and copied-line share per sample.

    `near_copy` excludes exact copies, so exact_copy + near_copy counts every copy once.
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
    character entropy > 5.0 bits, i.e. closer to random characters than to art or prose.
    cut_off: passed in, generation hit max_new_tokens before EOS.
    """
    return _validity(normalize(text), cut_off)


def _diversity(c: list[str]) -> dict:
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
    return {"duplicate_rate": (n - len(set(c))) / n if n else None, "mean_pairwise_distance": mpd,
            "distinct_ngrams": distinct / n_grams if n_grams else None,
            "n": n, "pairs": int(len(i)), "pairs_sampled": total > MAX_PAIRS}


def diversity(samples: list[str]) -> dict:
    """Duplicate rate, mean pairwise normalized edit distance and distinct 4-gram share.

    All on whitespace-collapsed text. duplicate_rate: share of samples equal to an earlier one.
    mean_pairwise_distance: mean of 1 - similarity over all pairs, or over MAX_PAIRS seeded
    random pairs when there are more. distinct_ngrams: distinct character 4-grams over all
    4-grams, each sample's 4-grams counted within that sample. None where undefined.
    """
    return _diversity([collapse_whitespace(normalize(s)) for s in samples])


# ---------------------------------------------------------------- aggregation

def _summaries(columns: list[list[float]], higher_is_better: list[bool]) -> list[dict]:
    """metric() for several equally long columns, sharing one set of bootstrap resamples."""
    x = np.asarray(columns, dtype=np.float64).reshape(len(columns), -1).T  # (n, k)
    n = x.shape[0]
    if n == 0:
        return [{"value": None, "stderr": None, "ci_low": None, "ci_high": None, "n": 0, "higher_is_better": h}
                for h in higher_is_better]
    rng = np.random.default_rng(BOOTSTRAP_SEED)  # per call: an interval never depends on call order
    means = np.concatenate([x[rng.integers(0, n, (100, n))].mean(axis=1)
                            for _ in range(BOOTSTRAP_RESAMPLES // 100)])  # 100 at a time bounds memory
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    sd = x.std(axis=0, ddof=1) if n > 1 else [None] * x.shape[1]
    return [{"value": float(x[:, k].mean()), "stderr": float(sd[k] / math.sqrt(n)) if n > 1 else None,
             "ci_low": float(lo[k]), "ci_high": float(hi[k]), "n": n, "higher_is_better": h}
            for k, h in enumerate(higher_is_better)]


def metric(values: list[float], higher_is_better: bool) -> dict:
    """Mean with stderr and a seeded 95% percentile-bootstrap interval (the fixed metric format)."""
    return _summaries([values], [higher_is_better])[0]


_PER_SAMPLE_METRICS = (  # (metric name, per-sample key, higher_is_better)
    ("width_consistency", "width_consistency", True), ("novelty", "novelty", True),
    ("exact_copy_rate", "exact_copy", False), ("near_copy_rate", "near_copy", False),
    ("copied_line_share", "copied_line_share", False), ("valid_rate", "valid", True),
    ("cut_off_rate", "cut_off", False))
_DIVERSITY_METRICS = (("duplicate_rate", False), ("mean_pairwise_distance", True), ("distinct_ngrams", True))


def score_pieces(samples: list[str], train_texts: list[str], cut_off: list[bool] | None = None,
                 reference: list[float] | None = None) -> dict:
    """Per-sample scores, metrics with uncertainty over samples, and diversity of a set of outputs."""
    if cut_off is not None and len(cut_off) != len(samples):
        raise ValueError(f"cut_off has {len(cut_off)} flags for {len(samples)} samples")
    flags = cut_off if cut_off is not None else [False] * len(samples)
    norm, train_norm = [normalize(s) for s in samples], [normalize(t) for t in train_texts]
    ref = np.asarray(reference if reference is not None else [_width_consistency(t) for t in train_norm])
    if not len(ref):
        raise ValueError("reference is empty")
    per_sample = []
    for text, cut, near in zip(norm, flags, _novelty(norm, train_norm), strict=True):
        wc = _width_consistency(text)
        per_sample.append({"width_consistency": wc, "width_percentile": 100.0 * np.count_nonzero(ref <= wc) / len(ref),
                           **near, **_validity(text, cut)})
    summaries = _summaries([[float(s[key]) for s in per_sample] for _, key, _ in _PER_SAMPLE_METRICS],
                           [h for _, _, h in _PER_SAMPLE_METRICS])
    metrics = {name: m for (name, _, _), m in zip(_PER_SAMPLE_METRICS, summaries, strict=True)}
    div = _diversity([collapse_whitespace(t) for t in norm])
    for name, hib in _DIVERSITY_METRICS:
        metrics[name] = {"value": div[name], "stderr": None, "ci_low": None, "ci_high": None,
                         "n": len(samples), "higher_is_better": hib}
    return {"per_sample": per_sample, "metrics": metrics, "diversity": div}


def human_reference(heldout_texts: list[str], train_texts: list[str]) -> dict:
    """score_pieces on held-out human pieces: what a non-memorized piece looks like."""
    return score_pieces(heldout_texts, train_texts)


# ---------------------------------------------------------------- verdicts

def copy_verdict(scores: dict, human: dict) -> dict:
    """Copy-evidence verdict of score_pieces output against the human held-out reference.

    A sample is a copy if it is an exact copy, or its nearest-training similarity is at least
    max(0.85, the 95th percentile of the held-out human pieces' nearest-training similarity).
    invalid: valid_rate < 0.5. memorizing: copies >= 50% of all samples. novel: copies <= 10%,
    and, over valid samples, mean novelty is not below the human reference's (95% intervals
    overlap) and mean copied-line share is not above it (likewise). mixed: anything else.
    """
    per, hper = scores["per_sample"], human["per_sample"]
    if not per:
        raise ValueError("no samples to judge")
    human_sims = [s["similarity"] for s in hper]
    threshold = max(NEAR_COPY_SIMILARITY,
                    float(np.percentile(human_sims, HUMAN_SIMILARITY_PERCENTILE)) if human_sims else 0.0)
    copy_rate = sum(s["exact_copy"] or s["similarity"] >= threshold for s in per) / len(per)
    valid, hvalid = [s for s in per if s["valid"]], [s for s in hper if s["valid"]]
    valid_rate = len(valid) / len(per)
    nov, h_nov = (metric([s["novelty"] for s in v], True) for v in (valid, hvalid))
    lines, h_lines = (metric([s["copied_line_share"] for s in v], False) for v in (valid, hvalid))
    both = bool(valid) and bool(hvalid)  # with either side empty there is nothing to compare
    novelty_ok = both and nov["ci_high"] >= h_nov["ci_low"]
    lines_ok = both and lines["ci_low"] <= h_lines["ci_high"]
    if valid_rate < MIN_VALID_RATE:
        verdict = "invalid"
    elif copy_rate >= MEMORIZING_COPY_RATE:
        verdict = "memorizing"
    elif copy_rate <= NOVEL_MAX_COPY_RATE and novelty_ok and lines_ok:
        verdict = "novel"
    else:
        verdict = "mixed"
    rule = (f"invalid if valid_rate < {MIN_VALID_RATE}; memorizing if >= {MEMORIZING_COPY_RATE:.0%} of samples "
            f"are copies (exact, or nearest-training similarity >= max({NEAR_COPY_SIMILARITY}, human held-out "
            f"p{HUMAN_SIMILARITY_PERCENTILE})); novel if <= {NOVEL_MAX_COPY_RATE:.0%} are copies and valid samples' "
            "novelty and copied-line share are within the human reference's 95% intervals; mixed otherwise")
    evidence = {"valid_rate": valid_rate, "copy_rate": copy_rate, "copy_similarity_threshold": threshold,
                "novelty_valid": nov, "human_novelty_valid": h_nov, "copied_line_share_valid": lines,
                "human_copied_line_share_valid": h_lines, "novelty_within_human": novelty_ok,
                "copied_lines_within_human": lines_ok}
    return {"verdict": verdict, "rule": rule, "evidence": evidence}


def combine_verdicts(loss_verdict: str, copy: dict) -> dict:
    """Final memorization verdict from the loss-curve verdict and copy_verdict's output.

    invalid if the outputs are invalid (nothing to judge the drawings by); memorizing if either
    verdict says so; mixed if the loss says learning but outputs show partial copying; else the
    loss verdict (learning or undertrained).
    """
    if loss_verdict not in LOSS_VERDICTS:
        raise ValueError(f"loss verdict must be one of {LOSS_VERDICTS}, not {loss_verdict!r}")
    c = copy["verdict"]
    if c == "invalid":
        verdict = "invalid"
    elif "memorizing" in (loss_verdict, c):
        verdict = "memorizing"
    elif c == "mixed" and loss_verdict == "learning":
        verdict = "mixed"
    else:
        verdict = loss_verdict
    rule = ("invalid if the copy verdict is invalid; memorizing if either verdict is memorizing; mixed if the "
            "loss says learning but the copy verdict is mixed; otherwise the loss verdict")
    return {"verdict": verdict, "rule": rule, "loss_verdict": loss_verdict, "copy_verdict": c}


# ---------------------------------------------------------------- input and output

def _split_text(text: str) -> list[str]:
    lines = text.split("\n")
    blank = [not line.strip() for line in lines]
    # Two blank lines separate pieces whenever the file uses them anywhere, so a piece may hold
    # single blank lines inside; otherwise every blank line separates pieces.
    sep = 2 if any(a and b for a, b in pairwise(blank)) else 1
    pieces, current, run = [], [], 0
    for line, is_blank in zip(lines + [""] * sep, blank + [True] * sep, strict=True):
        run = run + 1 if is_blank else 0
        current.append(line)
        if run == sep:
            pieces.append("\n".join(current))
            current, run = [], 0
    return [p for p in (normalize(p) for p in pieces) if p.strip()]


def _jsonl_records(text: str, path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"Line {number} of '{path}' is not valid JSON: write one JSON object or string "
                            "per line.") from None
        if isinstance(obj, str):
            obj = {"text": obj}
        key = next((k for k in ("text", "ascii") if isinstance(obj, dict) and isinstance(obj.get(k), str)), None)
        if key is None:
            raise UserError(f"Line {number} of '{path}' has no string 'text' or 'ascii' field: "
                            "give each line one of them.")
        records.append({"text": obj[key], "cut_off": obj.get("cut_off")})
    return records


def read_samples(path: str | Path) -> tuple[list[str], list[bool] | None]:
    """Pieces of a .txt or .jsonl file plus cut_off flags when every JSONL record has a boolean one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Samples file '{path}' does not exist: pass a .txt or .jsonl file of generated pieces.")
    try:
        text = path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise UserError(f"File '{path}' is not UTF-8 text: re-save it as UTF-8.") from None
    if path.suffix.lower() == ".jsonl":
        records = _jsonl_records(text, path)
        pieces = [r["text"] for r in records]
        flags = [r["cut_off"] for r in records]
        cut = flags if flags and all(isinstance(f, bool) for f in flags) else None
    else:
        pieces, cut = _split_text(text), None
    if not pieces:
        raise UserError(f"File '{path}' holds no pieces: write pieces separated by blank lines, or JSONL records.")
    return pieces, cut


def read_pieces(path: str | Path) -> list[str]:
    """Pieces of a text file (see _split_text: two blank lines separate if used anywhere, else one) or JSONL.

    JSONL: one JSON object per line with a string "text" or "ascii" field, or one JSON string.
    JSONL keeps empty pieces (they are failed generations); a text file cannot express them.
    """
    return read_samples(path)[0]


def _cell(m: dict) -> str:
    if m.get("value") is None:
        return "-"
    if m.get("ci_low") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def format_table(rows: dict[str, dict]) -> str:
    """Plain-text table: one line per metric, one column per row (a score_pieces output or its metrics)."""
    metrics = {name: (r["metrics"] if "metrics" in r else r) for name, r in rows.items()}
    names = list(dict.fromkeys(k for m in metrics.values() for k in m))
    header = ["metric", "better", *metrics]
    body = []
    for k in names:
        first = next(m[k] for m in metrics.values() if k in m)
        body.append([k, "higher" if first["higher_is_better"] else "lower",
                     *(_cell(m[k]) if k in m else "-" for m in metrics.values())])
    body.append(["n", "", *(str(next(iter(m.values()))["n"]) if m else "0" for m in metrics.values())])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
