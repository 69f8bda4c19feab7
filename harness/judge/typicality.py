"""Typicality: how much a piece looks like the training art, in bits per character under a 2-D character model.

    from harness.judge.typicality import typicality
    out = typicality(samples, train_texts, heldout_texts)   # in a run: held-out pieces are the human reference
    out["per_sample"][0]   # {cross_entropy_bits, typicality_percentile, structure_bits, ..., atypical, reasons}
    out["set"]["verdict_noise"], out["metrics"]["cross_entropy_bits"]
    typicality(samples, data_texts, groups=group_ids)        # external: leave-one-group-out human reference

The model predicts each character from the characters before it on its line AND the characters
above it (the one directly above and its two neighbours in the previous line; columns past a
line's end are spaces), so the vertical structure of ASCII art counts as well as its horizontal
strokes. Every line ends in an end-of-line symbol that is predicted too, so where lines stop
counts. Smoothing is interpolated Witten-Bell along a chain of nested contexts down to the
unigram and a uniform floor, so every character, seen in training or not, has a probability.
Three measures per piece, all in bits per character:

- cross_entropy_bits: under the 2-D model; typicality proper (lower = more like the training art).
- structure_bits: what the contexts save over character frequencies alone (unigram minus 2-D).
  Noise of the training pieces' own characters has typical characters but no structure: the
  2-D model predicts it worse than the unigram does, so it is negative.
- vertical_bits: what the line above saves (the model without it minus the 2-D model): vertical
  coherence. Lines of different pieces shuffled together are ordinary lines one at a time but
  contradict the line above, so it is negative.

Pure numpy: texts become one array of symbol ids, contexts integer keys, counts sorted arrays
looked up with searchsorted; there is no Python loop over characters. Everything is passed
through `harness.data.normalize` first, as in scoring.
"""
from __future__ import annotations

import math

import numpy as np

from harness.data import normalize

# Contexts, most specific first; each a subset of the one before (Witten-Bell interpolates each
# level with the next). l1..l3: the 1st..3rd character to the left on the same line; ul, u, ur:
# the characters above-left, above and above-right in the previous line. Of five chains tried on
# catsart (161 train, 23 held out), this one and the same without l3 had the lowest held-out median
# (2.42 and 2.41 bits); this one put more noise above the held-out maximum (27% against 13% of
# noise drawn from training characters). Witten-Bell came within 0.1 bit of absolute discounting
# at D = 0.6-0.9, without a parameter to choose.
CHAIN_2D = (("l1", "l2", "l3", "ul", "u", "ur"), ("l1", "l2", "ul", "u", "ur"), ("l1", "ul", "u", "ur"),
            ("l1", "u"), ("l1",), ())
CHAIN_1D = (("l1", "l2", "l3"), ("l1", "l2"), ("l1",), ())  # the same without the line above
CHAIN_UNIGRAM = ((),)
# Keys are mixed-radix integers of up to 7 symbols (6 context + target) in int64, so the radix
# (symbols + 3 specials) must stay <= 512; rarer characters beyond that share the unknown symbol.
MAX_SYMBOLS = 500
_ASCII = np.array([10, *range(32, 127)])  # always in the alphabet: the uniform floor never depends on the data

# Per-sample thresholds: a sample is atypical when it lies beyond the human reference's 1st/99th
# percentile by a margin, on any of three measures. Measured on catsart and on 222 pyfiglet
# banners (one word per font), with the reference drawn as 23 or 150 unseen human pieces: the rule
# flags 6% (23) / 2% (150) of other unseen human pieces, and 100% of random symbol lines, 73-100%
# of random art characters with spaces and 100% of noise drawn from the training pieces' own
# characters. Without margins it flagged 7-9% / 3% of human pieces; margins of 0.5 bit (4 for the
# score) flagged 5% / 1-2% but let random art characters through (only 53% flagged on cats).
REFERENCE_PERCENTILE = 99
CROSS_ENTROPY_MARGIN_BITS = 0.25
STRUCTURE_MARGIN_BITS = 0.25
# structure_bits * sqrt(characters): a short human piece (a 3-line face) can save nothing per
# character by chance, a long one cannot. The banners' human reference holds tiny, noise-like
# fonts, so per character alone flagged only 7-23% of random art characters there; with the
# scaled score as well, 93-100%.
STRUCTURE_SCORE_MARGIN = 2.0
# Set test: one-sided Mann-Whitney U of the samples against the human reference on each measure,
# Bonferroni over the three. verdict_noise needs p < SET_ALPHA / 3 on one measure AND an effect
# (probability that a sample is worse than a human piece) >= SET_MIN_EFFECT there. Measured, on
# the measure that separates best: every noise case (random symbols, random art characters,
# training-character noise, lines of different pieces shuffled together, prose) 0.95-1.00 on
# cats and banners, in a run and external; real art of the other kind (banners judged against
# cats, cats against banners) 0.69-0.79; unseen held-out pieces 0.43-0.50; copies <= 0.15.
# 0.85 sits in the gap. On 200 random sets of 10 or 30 unseen human pieces it never fired.
SET_ALPHA = 0.01
SET_MIN_EFFECT = 0.85
MEASURES = (("cross_entropy_bits", "greater"), ("structure_bits", "less"), ("vertical_bits", "less"))
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


class CharModel:
    """A 2-D character n-gram fitted on training pieces; bits per character of any text."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, ...], tuple] = {}

    def fit(self, texts: list[str]) -> CharModel:
        """Count every context of CHAIN_2D and CHAIN_1D over the normalized training texts."""
        norm = [normalize(t) for t in texts]
        if not norm:
            raise ValueError("no training texts to fit the character model on")
        cps, counts = np.unique(_codepoints(norm), return_counts=True)
        keep = cps[np.argsort(-counts, kind="stable")][: MAX_SYMBOLS - len(_ASCII)]
        self.vocab = np.union1d(keep, _ASCII)
        v = len(self.vocab)
        self.unknown, self.line_start, self.no_line_above, self.radix = v, v + 1, v + 2, v + 3
        self.space = int(np.searchsorted(self.vocab, 32))
        feats, target, _ = self._features(norm)
        for context in dict.fromkeys(CHAIN_2D + CHAIN_1D):
            keys, n = np.unique(self._keys(feats, context) * self.radix + target, return_counts=True)
            ctx = keys // self.radix
            first = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])
            self.tables[context] = (keys, n, ctx[first], np.add.reduceat(n, first), np.diff(np.r_[first, len(ctx)]))
        return self

    def _features(self, norm: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Each position's context symbols, its target symbol and the index of its text."""
        cps = _codepoints(norm)
        at = np.minimum(np.searchsorted(self.vocab, cps), len(self.vocab) - 1)
        ids = np.where(self.vocab[at] == cps, at, self.unknown)
        n, pos = len(cps), np.arange(len(cps))
        ends = np.flatnonzero(cps == 10)  # every line, the last included, ends in "\n"
        starts = np.r_[0, ends[:-1] + 1]
        lengths = ends - starts
        line_of = np.repeat(np.arange(len(starts)), lengths + 1)
        col = pos - starts[line_of]
        lines_per_text = np.array([t.count("\n") + 1 for t in norm])
        first_line = np.zeros(len(starts), bool)
        first_line[np.r_[0, np.cumsum(lines_per_text)[:-1]]] = True
        feats = {f"l{k}": np.where(col >= k, ids[np.maximum(pos - k, 0)], self.line_start) for k in (1, 2, 3)}
        prev, top = np.maximum(line_of - 1, 0), first_line[line_of]
        for name, d in (("ul", -1), ("u", 0), ("ur", 1)):
            q = col + d
            above = np.where((q >= 0) & (q < lengths[prev]), ids[np.clip(starts[prev] + q, 0, n - 1)], self.space)
            feats[name] = np.where(top, self.no_line_above, above)
        return feats, ids, np.repeat(np.arange(len(norm)), lines_per_text)[line_of]

    def _keys(self, feats: dict[str, np.ndarray], context: tuple[str, ...]) -> np.ndarray:
        key = np.zeros(len(feats["l1"]), np.int64)
        for f in context:
            key = key * self.radix + feats[f]
        return key

    def char_bits(self, texts: list[str], groups: list | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Bits of every character under the 2-D, 1-D and unigram chains, and the index of its text.

        With `groups` (one label per text, all texts among those fitted), each text is scored as
        if the model had been fitted without its whole group: leave-one-group-out in one pass.
        """
        if not self.tables:
            raise ValueError("the character model is not fitted: call fit() first")
        norm = [normalize(t) for t in texts]
        if not norm:
            empty = np.zeros(0)
            return {"2d": empty, "1d": empty, "unigram": empty}, np.zeros(0, np.int64)
        feats, target, text_of = self._features(norm)
        group = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1][text_of]
        probs: dict[tuple, np.ndarray] = {(): np.full(len(target), 1.0 / (self.unknown + 1))}
        for chain in (CHAIN_2D, CHAIN_1D):
            for i in range(len(chain) - 1, -1, -1):  # unigram first: each level smooths the one below
                below, here = chain[i + 1:], chain[i:]
                if here not in probs:
                    probs[here] = self._level(feats, target, chain[i], probs[below], group)
        bits = {"2d": -np.log2(probs[CHAIN_2D]), "1d": -np.log2(probs[CHAIN_1D]),
                "unigram": -np.log2(probs[CHAIN_UNIGRAM])}
        return bits, text_of

    def _level(self, feats, target, context, p_below, group) -> np.ndarray:
        keys, counts, ctx_keys, ctx_counts, types = self.tables[context]
        ctx = self._keys(feats, context)
        joint = ctx * self.radix + target
        (c_h, t_h), (c_hc,) = _lookup(ctx_keys, ctx, ctx_counts, types), _lookup(keys, joint, counts)
        if group is not None:  # take out the text's own group: its counts, and the types only it had
            own_hc, first = _count_within(group, joint)
            c_h = c_h - _count_within(group, ctx)[0]
            vanished = np.where(first & (own_hc == c_hc), 1, 0)
            t_h = t_h - _sum_within(group, ctx, vanished)
            c_hc = c_hc - own_hc
            if np.any(c_hc < 0):
                raise ValueError("with groups, score exactly the texts the model was fitted on")
        return np.where(c_h > 0, (c_hc + t_h * p_below) / np.maximum(c_h + t_h, 1), p_below)

    def measure(self, texts: list[str], groups: list | None = None) -> dict[str, np.ndarray]:
        """Per text: 2-D cross-entropy, structure and vertical bits per character, and characters scored."""
        bits, text_of = self.char_bits(texts, groups)
        n = np.bincount(text_of, minlength=len(texts))
        ce = {k: np.bincount(text_of, b, minlength=len(texts)) / np.maximum(n, 1) for k, b in bits.items()}
        structure = ce["unigram"] - ce["2d"]
        return {"cross_entropy_bits": ce["2d"], "structure_bits": structure, "vertical_bits": ce["1d"] - ce["2d"],
                "structure_score": structure * np.sqrt(n), "n_chars": n}

    def cross_entropy(self, text: str) -> float:
        """Bits per character of one text under the 2-D model."""
        return float(self.measure([text])["cross_entropy_bits"][0])


def _codepoints(norm: list[str]) -> np.ndarray:
    text = "\n".join(norm) + "\n"  # lone surrogates (possible in decoded JSON) pass as their code points
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)


def _lookup(keys: np.ndarray, query: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """For each of `values`: values[k] where keys[k] == query, else 0 (keys sorted)."""
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = keys[at] == query
    return [np.where(found, v[at], 0) for v in values]


def _runs(group: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order by (group, key), run id of each sorted position, and run starts."""
    order = np.lexsort((key, group))
    g, k = group[order], key[order]
    start = np.r_[True, (g[1:] != g[:-1]) | (k[1:] != k[:-1])]
    return order, np.cumsum(start) - 1, np.flatnonzero(start)


def _count_within(group: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position: occurrences of its key within its group, and whether it is the first of them."""
    order, run, starts = _runs(group, key)
    count, first = np.empty(len(key), np.int64), np.zeros(len(key), bool)
    count[order] = np.diff(np.r_[starts, len(key)])[run]
    first[order[starts]] = True
    return count, first


def _sum_within(group: np.ndarray, key: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per position: the sum of `values` over the positions sharing its group and key."""
    order, run, _ = _runs(group, key)
    out = np.empty(len(key), np.int64)
    out[order] = np.bincount(run, values[order])[run].astype(np.int64)
    return out


# ---------------------------------------------------------------- references, flags and the set test

def reference(human: dict[str, np.ndarray]) -> dict:
    """Thresholds from the human reference's measures (see the constants for the evidence)."""
    n = len(human["cross_entropy_bits"])
    if not n:
        raise ValueError("the human reference is empty")
    hi, lo = REFERENCE_PERCENTILE, 100 - REFERENCE_PERCENTILE
    return {"n": n, "values": {k: [float(x) for x in human[k]] for k in human if k != "n_chars"},
            "max_cross_entropy_bits": float(np.percentile(human["cross_entropy_bits"], hi)) + CROSS_ENTROPY_MARGIN_BITS,
            "min_structure_bits": float(np.percentile(human["structure_bits"], lo)) - STRUCTURE_MARGIN_BITS,
            "min_structure_score": float(np.percentile(human["structure_score"], lo)) - STRUCTURE_SCORE_MARGIN}


def flag(measures: dict[str, np.ndarray], ref: dict) -> list[dict]:
    """Per-sample rows: the measures, the percentile among human pieces, atypical and why."""
    human = np.sort(ref["values"]["cross_entropy_bits"])
    rows = []
    for i in range(len(measures["cross_entropy_bits"])):
        row = {k: float(measures[k][i]) for k in ("cross_entropy_bits", "structure_bits", "structure_score",
                                                  "vertical_bits")}
        below = np.searchsorted(human, row["cross_entropy_bits"], "right")
        row["typicality_percentile"] = 100.0 * float(below) / len(human)
        reasons = [name for name, beyond in (
            ("cross_entropy", row["cross_entropy_bits"] > ref["max_cross_entropy_bits"]),
            ("structure", row["structure_bits"] < ref["min_structure_bits"]),
            ("structure_score", row["structure_score"] < ref["min_structure_score"])) if beyond]
        rows.append({**row, "atypical": bool(reasons), "reasons": reasons})
    return rows


def rank_test(samples: list[float], human: list[float], alternative: str = "greater") -> dict:
    """One-sided Mann-Whitney U (normal approximation, ties and continuity corrected) and its effect.

    effect = U / (n1 * n2): the probability that a sample is beyond a human piece in the direction
    of `alternative` ("greater" or "less"), ties counting half.
    """
    x, y = np.asarray(samples, float), np.asarray(human, float)
    if alternative == "less":
        x, y = -x, -y
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        return {"statistic": None, "effect": None, "p_value": None, "n_samples": n1, "n_human": n2}
    both = np.r_[x, y]
    values, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    rank = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # average ranks, 1-based
    u = float(rank[:n1].sum() - n1 * (n1 + 1) / 2)
    n = n1 + n2
    var = n1 * n2 / 12.0 * ((n + 1) - float((counts ** 3 - counts).sum()) / (n * (n - 1)) if n > 1 else 0.0)
    p = 0.5 * math.erfc((u - n1 * n2 / 2.0 - 0.5) / math.sqrt(2 * var)) if var > 0 else 1.0
    return {"statistic": u, "effect": u / (n1 * n2), "p_value": min(1.0, p), "n_samples": n1, "n_human": n2}


def set_test(measures: dict[str, np.ndarray], ref: dict) -> dict:
    """The samples' measures against the human reference's, one rank test per measure."""
    tests = {}
    for name, alternative in MEASURES:
        s, h = measures[name], ref["values"][name]
        t = rank_test(list(s), h, alternative)
        significant = t["p_value"] is not None and t["p_value"] < SET_ALPHA / len(MEASURES)
        t.update(median_samples=float(np.median(s)) if len(s) else None, median_human=float(np.median(h)),
                 direction=alternative, flagged=bool(significant and t["effect"] >= SET_MIN_EFFECT))
        tests[name] = t
    rule = (f"noise if, on any of {', '.join(n for n, _ in MEASURES)}, a one-sided Mann-Whitney U test against "
            f"the human reference has p < {SET_ALPHA}/{len(MEASURES)} and effect >= {SET_MIN_EFFECT}")
    return {"verdict_noise": any(t["flagged"] for t in tests.values()), "rule": rule, "tests": tests}


def _metric(values: list[float], higher_is_better: bool) -> dict:
    """Mean, stderr and a seeded 95% percentile-bootstrap interval: the project's metric format."""
    x, n = np.asarray(values, float), len(values)
    if not n:
        return {"value": None, "stderr": None, "ci_low": None, "ci_high": None, "n": 0,
                "higher_is_better": higher_is_better}
    means = x[np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, (BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"value": float(x.mean()), "stderr": float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
            "ci_low": float(lo), "ci_high": float(hi), "n": n, "higher_is_better": higher_is_better}


def metrics(rows: list[dict]) -> dict:
    """Typicality metrics over per-sample rows (cross-entropy: lower is more typical, copies lowest)."""
    return {"cross_entropy_bits": _metric([r["cross_entropy_bits"] for r in rows], False),
            "structure_bits": _metric([r["structure_bits"] for r in rows], True),
            "vertical_bits": _metric([r["vertical_bits"] for r in rows], True),
            "typical_rate": _metric([float(not r["atypical"]) for r in rows], True)}


def typicality(samples: list[str], train_texts: list[str], human_texts: list[str] | None = None,
               groups: list | None = None) -> dict:
    """Per-sample typicality, metrics and the set test against a human reference.

    In a run, pass the held-out pieces as `human_texts`: they are scored by the model fitted on
    `train_texts`. For external scoring pass `groups` (one label per training text: its group of
    close variants) instead: each training piece is then scored by the model without its group.
    """
    model = CharModel().fit(train_texts)
    if human_texts is not None:
        human = model.measure(human_texts)
    elif groups is not None:
        if len(groups) != len(train_texts):
            raise ValueError(f"groups has {len(groups)} labels for {len(train_texts)} training texts")
        human = model.measure(train_texts, groups)
    else:
        raise ValueError("pass human_texts (held-out pieces) or groups (for a leave-one-group-out reference)")
    ref = reference(human)
    measured = model.measure(samples)
    rows = flag(measured, ref)
    return {"per_sample": rows, "metrics": metrics(rows), "human_metrics": metrics(flag(human, ref)),
            "set": set_test(measured, ref), "thresholds": {k: v for k, v in ref.items() if k != "values"}}
