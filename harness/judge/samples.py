"""Samples into the judge: a run's human reference, and the pieces a user hands to `asciitune score`.

Pure (no torch). `read_samples` reads .txt (pieces separated by blank lines) or JSONL; judging itself
is harness.judge.judge.judge.
"""
from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

from harness.data import Dataset, normalize
from harness.errors import UserError
from harness.judge import reference
from harness.results import Scores


def human_reference(ds: Dataset) -> Scores:
    """The held-out human pieces scored against the training pieces, like samples are (once per run)."""
    return reference.in_run(ds).human


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
