"""What samples are judged against, built once: training pieces, copy pool, character model, human reference.

    ref = reference.in_run(ds)                # a run: its training pieces; human reference cross-fitted
    ref = reference.for_run(ds, human)        # a variant's process: the same, from the stored human reference
    ref = reference.external(texts, drawings) # `asciitune score FILE --train DATA`: all of DATA is training
    scores = ref.score(samples, cut_off)

The human reference is what unseen art of the same kind looks like when scored as samples are. Inside a
run, samples are scored against the run's training pieces (typicality model, widths) and copies are
looked for among them plus the near duplicates the run left out (a copy of a dropped variant is a
copy); the human pieces are the run's training and held-out pieces, cross-fitted: each fold scored
against a training set of the real one's size drawn from the other folds (cross_fitted). Outside a
run nothing of DATA is held out: every piece is training, and the human reference scores each piece
against DATA without its own drawing, itself and its near duplicates (leave-one-drawing-out). Only the
drawing is left out, not its group of close variants: a new piece of a shared style (a new word in a
known font) meets close variants of itself in DATA, and a reference that never did would make such a
piece look less novel than human art (FIGlet banners of new words in a set's own fonts: novelty 0.261,
against a reference of 0.279 with groups left out and 0.227 with drawings; tests/test_judge_cases.py).
Pure (no torch).
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from harness.config import DataConfig
from harness.data import Dataset, collapse_whitespace, group_pieces, normalize
from harness.judge import score, typicality
from harness.judge.typicality import Calibrated
from harness.results import Scores

FOLDS = 5  # cross-fitting folds (cross_fitted): each reference fit sees 4/5 of the pieces


@dataclass
class Reference:
    """Training pieces, copy pool and width reference (all normalized), the calibrated model, the human reference."""

    train: list[str]
    pool: list[str]  # train first, so a training piece's index is the same in both
    widths: list[float]
    typical: Calibrated | None  # None: a stored human reference without typicality measures
    human: Scores

    def score(self, samples: list[str], cut_off: list[bool] | None = None) -> Scores:
        """score_pieces against this reference."""
        return score.score_pieces(samples, self.train, cut_off, reference=self.widths, typical=self.typical,
                                  pool=self.pool)


def in_run(ds: Dataset) -> Reference:
    """A run's reference: its training pieces, and a human reference cross-fitted over its training and held-out
    pieces (split)."""
    near = float(ds.extra.get("near_duplicate_similarity", DataConfig.near_duplicate_similarity))
    return split([p.text for p in ds.train], [p.text for p in ds.heldout], [p.text for p in ds.dropped], near)


def for_run(ds: Dataset, human: Scores) -> Reference:
    """A run's reference from its stored human reference (the model is refitted: cached, ~15 ms for 200 pieces)."""
    return _with_human([p.text for p in ds.train], [p.text for p in ds.dropped], human)


def split(train: list[str], heldout: list[str], dropped: list[str] = (),
          near_duplicate_similarity: float = DataConfig.near_duplicate_similarity) -> Reference:
    """in_run on bare texts: train, held-out and left-out near duplicates (copy checks).

    The human reference is every training and held-out piece, cross-fitted by drawing (cross_fitted): each scored
    against a training set of the real one's size drawn from the other folds. The held-out pieces alone (13 in the
    default run) would make a reference too small to tell a set of samples from it, and one that never meets a
    close variant of itself, which a new piece of the same kind may well do.
    """
    texts = [*train, *heldout]
    drawings = group_pieces(texts, near_duplicate_similarity=near_duplicate_similarity).drawing
    return _with_human(train, dropped, cross_fitted(texts, drawings, train_size=len(train)))


def _with_human(train: list[str], dropped: list[str], human: Scores) -> Reference:
    train = [normalize(t) for t in train]
    limits = typicality.limits_from_rows(human.per_sample)
    typical = Calibrated(typicality.fitted(train), limits) if limits else None
    return Reference(train, train + [normalize(t) for t in dropped], score.reference_distribution(train), typical,
                     human)


def _novelty_logo(norm: list[str], groups: list[int]) -> list[dict]:
    """Each piece's novelty rows (as score.novelty) against the pieces outside its own group."""
    collapsed = [collapse_whitespace(t) for t in norm]
    g = np.asarray(groups)
    sims = process.cdist(collapsed, collapsed, scorer=Levenshtein.normalized_similarity, dtype=np.float64,
                         workers=score.WORKERS)
    sims[g[:, None] == g[None, :]] = -1.0  # a piece's own group (itself included) is not there to copy
    line_groups: dict[str, set] = {}
    lines = [[line.strip() for line in t.split("\n") if score.nontrivial_line(line)] for t in norm]
    for own, piece_lines in zip(groups, lines, strict=True):
        for line in piece_lines:
            line_groups.setdefault(line, set()).add(own)
    heads = np.full(len(norm), -1.0), np.zeros(len(norm), dtype=int)  # score.COPY_HEADS, other groups only
    ks = np.array([len(score.visible_lines(t)) for t in norm])
    for k in sorted(set(ks.tolist()) - {0}):
        longer, cut = score.heads(norm, k)
        rows = np.flatnonzero(ks == k)
        if longer:
            hs = process.cdist([collapsed[i] for i in rows], cut, scorer=Levenshtein.normalized_similarity,
                               dtype=np.float64, workers=score.WORKERS)
            hs[g[rows][:, None] == g[longer][None, :]] = -1.0
            heads[0][rows], heads[1][rows] = hs.max(axis=1), np.asarray(longer)[hs.argmax(axis=1)]
    out = []
    for i, own in enumerate(groups):
        j = int(np.argmax(sims[i]))  # ties: the lowest index, as score.novelty
        s = max(float(sims[i, j]), 0.0)
        h = float(heads[0][i]) if heads[0][i] > s and heads[0][i] >= score.NEAR_COPY_SIMILARITY else None
        copied = sum(bool(line_groups[line] - {own}) for line in lines[i])
        out.append({"nearest_train_index": j if sims[i, j] >= 0 else None, "similarity": s, "novelty": 1.0 - s,
                    "exact_copy": s >= 1.0, "near_copy": s < 1.0 and max(s, h or 0.0) >= score.NEAR_COPY_SIMILARITY,
                    "head_train_index": int(heads[1][i]) if h is not None else None, "head_similarity": h,
                    "copied_line_share": copied / len(lines[i]) if lines[i] else 0.0})
    return out


def bare(train: list[str]) -> Reference:
    """Training pieces only: scores (no typicality, no human reference, so no copy verdict)."""
    train = [normalize(t) for t in train]
    return Reference(train, train, score.reference_distribution(train), None, Scores())


def fold_of(texts: list[str], groups: list[int], k: int) -> list[int]:
    """A fold per text, whole groups per fold, dealt round-robin in order of each group's smallest content hash:
    deterministic, and the folds as even as the groups allow."""
    keys: dict[int, str] = {}
    for t, g in zip(texts, groups, strict=True):
        h = hashlib.sha256(t.encode("utf-8")).hexdigest()
        keys[g] = min(keys.get(g, h), h)
    order = sorted(keys, key=keys.__getitem__)
    sizes = Counter(groups)
    load = [0] * k
    fold_of_group = {}
    for g in sorted(order, key=lambda g: -sizes[g]):  # largest first into the emptiest fold: even folds
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of_group[g], load[f] = f, load[f] + sizes[g]
    return [fold_of_group[g] for g in groups]


def cross_fitted(texts: list[str], groups: list[int], train_size: int = 0, k: int = FOLDS) -> Scores:
    """The human reference by K-fold cross-fitting: each fold's pieces scored as samples are (novelty and copies,
    widths, typicality) against a reference fitted on the other folds, subsampled to train_size pieces (0: all of
    them), so each human piece meets a training set like the real one and none of its own group."""
    norm = [normalize(t) for t in texts]
    k = max(2, min(k, len(set(groups))))
    fold = fold_of(norm, groups, k)
    near: list[dict | None] = [None] * len(norm)
    widths: list[np.ndarray | None] = [None] * len(norm)
    measures = {key: np.zeros(len(norm)) for key in typicality.ROW_KEYS}
    for f in range(k):
        idx = [i for i in range(len(norm)) if fold[i] == f]
        others = [i for i in range(len(norm)) if fold[i] != f]
        if 0 < train_size < len(others):  # a seeded subsample, so the reference is the same every time
            others = sorted(random.Random(f"cross-fit:{f}").sample(others, train_size))
        pool = [norm[i] for i in others]
        model = typicality.fitted(pool)
        got = model.measure([norm[i] for i in idx], normalized=True)
        w = np.sort(np.asarray(score.reference_distribution(pool)))
        for j, (i, row) in enumerate(zip(idx, score.novelty([norm[i] for i in idx], pool), strict=True)):
            near[i], widths[i] = row, w
            for key in typicality.ROW_KEYS:
                measures[key][i] = got[key][j]
    limits = typicality.reference(measures)
    flags = typicality.flag(measures, limits)
    rows = [score.sample_row(t, False, n, w, fl) for t, n, w, fl in zip(norm, near, widths, flags, strict=True)]
    return score.summarize(rows, [collapse_whitespace(t) for t in norm])


def external(texts: list[str], groups: list[int]) -> Reference:
    """Every text is training; the human reference scores each against the others without its group."""
    if len(groups) != len(texts):
        raise ValueError(f"groups has {len(groups)} labels for {len(texts)} texts")
    norm = [normalize(t) for t in texts]
    model = typicality.fitted(norm)
    calibrated, human_typical = typicality.calibrate(model, model.measure(norm, groups, normalized=True))
    widths = score.reference_distribution(norm)
    rows = [score.sample_row(text, False, near, np.asarray(widths), t) for text, near, t
            in zip(norm, _novelty_logo(norm, groups), human_typical, strict=True)]
    human = score.summarize(rows, [collapse_whitespace(t) for t in norm])
    return Reference(norm, norm, widths, calibrated, human)
