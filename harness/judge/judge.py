"""The one way samples are judged: a reference and samples in, typed rows, scores and the copy verdict out.

    ref = reference.in_run(ds)                      # or for_run / external / split (harness.judge.reference)
    j = judge(ref, texts, cut_off=flags)            # j.rows (SampleRow), j.scores, j.copy, j.version
    final = verdict.combine_verdicts(loss_analysis, j.copy)  # LossAnalysis, or a bare loss verdict

A training job, `asciitune score`, `generate --score` and export quality all call `judge`; none puts
the reference -> score -> copy verdict pipeline together itself. Pure (no torch).
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.judge import verdict
from harness.judge.reference import Reference
from harness.results import CopyAnalysis, SampleRow, Scores


@dataclass
class Judgement:
    """What the judge says of a set of samples."""

    rows: list[SampleRow]  # one per sample, in order
    scores: Scores  # metrics over their populations (per-sample rows live in `rows`, not here)
    copy: CopyAnalysis | None  # None when the reference has no human pieces to judge against
    version: int = verdict.JUDGE_VERSION


def judge(ref: Reference, texts: list[str], cut_off: list[bool] | None = None,
          meta: list[dict] | None = None) -> Judgement:
    """Score texts against ref, give the copy verdict against ref's human pieces, and one typed row per sample.

    meta: per sample, fields kept on its row (index, new_tokens; cut_off is taken from `cut_off`).
    """
    if meta is not None and len(meta) != len(texts):
        raise ValueError(f"meta has {len(meta)} entries for {len(texts)} samples")
    scored = ref.score(texts, cut_off)
    copy = verdict.copy_verdict(scored.per_sample, ref.human) if ref.human.per_sample and texts else None
    threshold = copy.evidence.copy_similarity_threshold if copy else None
    rows = []
    for i, (text, per) in enumerate(zip(texts, scored.per_sample, strict=True)):
        extra = {k: v for k, v in (meta[i] if meta else {}).items() if k in ("index", "new_tokens")}
        nearest = per.get("nearest_train_index")
        is_copy = threshold is not None and per["valid"] and verdict.is_copy(per, threshold)
        rows.append(SampleRow.from_dict({**per, **extra, "text": text, "copy": is_copy,
                                         "nearest_train_text": ref.pool[nearest] if nearest is not None else ""}))
    scored.per_sample = []
    return Judgement(rows, scored, copy)
