"""Samples into the judge: a run's human reference, and the pieces a user hands to `asciitune score`.

Pure (no torch). `read_sample_file` reads any file of pieces harness.pieces reads (a .txt file split by its one
documented rule, JSONL, CSV, Parquet, a folder of .txt files); judging itself is harness.judge.judge.judge.
"""
from __future__ import annotations

from pathlib import Path

from harness import pieces
from harness.data import Dataset
from harness.errors import UserError
from harness.judge import reference
from harness.pieces import PieceFile
from harness.results import Scores


def human_reference(ds: Dataset) -> Scores:
    """The held-out human pieces scored against the training pieces, like samples are (once per run)."""
    return reference.in_run(ds).human


def read_sample_file(path: str | Path, text_column: str = "", blank_lines: int | None = None) -> PieceFile:
    """The pieces of a samples file or folder (harness.pieces.read: .txt, .jsonl, .csv, .parquet, a folder), with
    how it was read; cut_off flags where every record has a boolean one. Empty records stay: failed generations."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"Samples file '{path}' does not exist: pass {pieces.FORMATS}.")
    read = pieces.read(path, text_column, blank_lines, option="--text-column")
    if not read.texts:
        fix = "put .txt files in it, one piece each" if path.is_dir() else \
            "write pieces separated by blank lines, or one record per line"
        raise UserError(f"'{path}' holds no pieces: {fix}.")
    return read


def read_samples(path: str | Path) -> tuple[list[str], list[bool] | None]:
    """Pieces of a samples file (read_sample_file) plus cut_off flags when every record has a boolean one."""
    read = read_sample_file(path)
    return read.texts, read.cut_off


def read_pieces(path: str | Path) -> list[str]:
    """Pieces of a samples file (read_sample_file; the splitting rule of a .txt file: harness.pieces.split_text)."""
    return read_sample_file(path).texts
