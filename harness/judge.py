"""Glue between generated samples, the scores in harness.score and the final verdict (no torch)."""
from __future__ import annotations

from dataclasses import dataclass

from harness import score
from harness.data import Dataset


@dataclass
class Judged:
    """Per-sample rows for samples.jsonl, aggregate scores, copy evidence and the final verdict."""

    rows: list[dict]
    scores: dict
    copy: dict
    verdict: dict


def human_reference(ds: Dataset) -> dict:
    """The held-out human pieces scored against the training pieces, like samples are."""
    train = [p.text for p in ds.train]
    return score.human_reference([p.text for p in ds.heldout], train)


def judge_samples(samples: list[dict], ds: Dataset, loss_verdict: str) -> Judged:
    """Score samples ({text, cut_off, ...}) against the training pieces and combine both verdicts."""
    train = [p.text for p in ds.train]
    texts = [s["text"] for s in samples]
    reference = score.reference_distribution(train)
    scored = score.score_pieces(texts, train, cut_off=[bool(s.get("cut_off")) for s in samples],
                                reference=reference)
    human = score.human_reference([p.text for p in ds.heldout], train)
    copy = score.copy_verdict(scored, human)
    verdict = score.combine_verdicts(loss_verdict, copy)
    rows = []
    for sample, per in zip(samples, scored["per_sample"]):
        nearest = per.get("nearest_train_index")
        rows.append({**sample, **per, "nearest_train_text": train[nearest] if nearest is not None else ""})
    aggregate = {k: v for k, v in scored.items() if k != "per_sample"}
    return Judged(rows, aggregate, copy, verdict)
