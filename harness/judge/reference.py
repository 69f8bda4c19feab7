"""What samples are judged against, built once: training pieces, copy pool, character model, human reference.

    ref = reference.in_run(ds)              # a run: its training pieces; human reference = held-out pieces
    ref = reference.for_run(ds, human)      # a variant's process: the same, from the stored human reference
    ref = reference.external(texts, groups) # `asciitune score FILE --train DATA`: all of DATA is training
    scores = ref.score(samples, cut_off)

Inside a run, samples are scored against the run's training pieces (typicality model, widths)
and copies are looked for among them plus the near duplicates the run left out (a copy of a
dropped variant is a copy). Outside a run nothing of DATA is held out: every piece is training,
and the human reference scores each piece against DATA without its own group of close variants
(leave-one-group-out), novelty, copies and typicality alike. Pure (no torch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from harness.data import Dataset, collapse_whitespace, normalize
from harness.judge import score, typicality
from harness.judge.typicality import Calibrated
from harness.results import Scores


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
    """A run's reference: the character model fitted on its training pieces, calibrated on its held-out ones."""
    return split([p.text for p in ds.train], [p.text for p in ds.heldout], [p.text for p in ds.dropped])


def for_run(ds: Dataset, human: Scores) -> Reference:
    """A run's reference from its stored human reference (the model is refitted: cached, ~15 ms for 200 pieces)."""
    return _with_human([p.text for p in ds.train], [p.text for p in ds.dropped], human)


def split(train: list[str], heldout: list[str], dropped: list[str] = ()) -> Reference:
    """in_run on bare texts: train, held-out (the human reference) and left-out near duplicates (copy checks)."""
    return _with_human(train, dropped, score.human_reference(heldout, train, pool=[*train, *dropped]))


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
