"""One reader for files of pieces: samples handed to `asciitune score`, and data sources (docs/data.md, "Files of
pieces").

    read("samples.txt")                   # pieces separated by blank lines (the rule below), or `generate`'s print
    read("samples.jsonl")                 # one JSON object per line with a "text" or "ascii" field, or a string
    read("samples.csv")                   # a "text" or "ascii" column (or text_column=NAME); .parquet likewise
    read("my_art/")                       # every .txt file under it, one piece each; or a datasets.save_to_disk folder

The format is read from the extension; anything else ends in one sentence. A .txt file is split by one rule that
trailing whitespace cannot change (`split_text`): blank lines at its start and end are ignored, a line of spaces is
blank, and pieces are separated by blank lines, by runs of two or more of them where the file has such a run
between pieces; where it also has single blank lines, the file could be read either way, and `PieceFile.note` says
which reading was taken and how to ask for the other (`blank_lines`). A file that holds the headers `asciitune
generate` prints (`--- sample 3 (41 tokens, eos) ---`) is read by those headers instead, so its printed output,
saved to a file, reads back as the samples it printed.

Data is also checked for what no art contains (`check_art`): NUL bytes, escape sequences and other control
characters than newline, carriage return and tab end in one sentence naming the file.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError

TABLE_SUFFIXES = (".jsonl", ".csv", ".parquet")
TEXT_COLUMNS = ("text", "ascii")  # the column read when none is named, first found
# What `asciitune generate` prints before each sample, and any other marker line of its printed output (the
# scores it prints after the samples start with one): in a file of such headers each sample runs to the next.
SAMPLE_HEADER = re.compile(r"^--- sample \S+ (.*)---\s*$")  # "(41 tokens, eos) " or "(64 tokens, cut off) "
MARKER = re.compile(r"^--- .* ---\s*$")
# Control characters other than tab, newline and carriage return: no art holds them (C0, DEL and C1 controls).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]")


@dataclass
class PieceFile:
    """The pieces of one file or folder, where each came from, and how it was read."""

    texts: list[str]
    origins: list[str]  # per piece: "cat.txt", "art.jsonl:3" (its line), "art.csv:3" (its row, from 0), "s.txt:12"
    cut_off: list[bool] | None  # per piece, where every record carries a boolean cut_off
    how: str  # "pieces separated by blank lines", "one piece per .txt file", "the 'text' column", ...
    note: str = ""  # where the file could be read another way: the reading taken and how to ask for the other


@dataclass(frozen=True)
class TextSplit:
    """A text file's pieces (raw, in order), the first line of each, and the reading taken."""

    pieces: list[str]
    first_lines: list[int]  # 1-based line number where each piece starts
    how: str
    note: str = ""
    cut_off: list[bool] | None = None  # from `generate`'s headers, where each says "eos" or "cut off"


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _by_headers(lines: list[str]) -> TextSplit:
    pieces, starts, ends, current, start, before = [], [], [], None, 0, 0
    for number, line in enumerate(lines, start=1):
        header = SAMPLE_HEADER.match(line)
        if header or MARKER.match(line):  # a marker ends the samples (`generate --score` prints its scores after one)
            if current is not None:
                pieces.append("\n".join(current))
                starts.append(start)
            current, start = ([], number + 1) if header else (None, 0)
            if header:
                ends.append("cut off" if "cut off" in header.group(1) else "eos" if "eos" in header.group(1) else "")
        elif current is not None:
            current.append(line)
        elif line.strip() and not pieces:
            before += 1
    if current is not None:
        pieces.append("\n".join(current))
        starts.append(start)
    note = (f"{before} line(s) before the first '--- sample' header are not a sample and were skipped"
            if before else "")
    cut = [e == "cut off" for e in ends] if all(ends) else None
    return TextSplit(pieces, starts, "one piece per '--- sample N ---' header, as `asciitune generate` prints them",
                     note, cut)


def split_text(text: str, blank_lines: int | None = None) -> TextSplit:
    """Split a text file into pieces by the rule in the module docstring (empty pieces dropped).

    blank_lines: 1 splits at every blank line, 2 only at runs of two or more; None picks 2 where the file has such
    a run between two pieces, else 1, and notes when single blank lines then stay inside pieces.
    """
    lines = _lines(text)
    if blank_lines is None and any(SAMPLE_HEADER.match(line) for line in lines):
        return _by_headers(lines)
    blank = [not line.strip() for line in lines]
    filled = [i for i, b in enumerate(blank) if not b]
    if not filled:
        return TextSplit([], [], "pieces separated by blank lines")
    first, last = filled[0], filled[-1]  # blank lines at the edges never separate anything
    runs: list[tuple[int, int]] = []  # (index of the run's first blank line, its length), between pieces only
    i = first
    while i <= last:
        if blank[i]:
            j = i
            while blank[j]:
                j += 1
            runs.append((i, j - i))
            i = j
        else:
            i += 1
    sep = blank_lines if blank_lines is not None else (2 if any(n >= 2 for _, n in runs) else 1)
    cuts = [(at, n) for at, n in runs if n >= sep]
    pieces, starts, begin = [], [], first
    for at, n in [*cuts, (last + 1, 0)]:
        pieces.append("\n".join(lines[begin:at]))
        starts.append(begin + 1)
        begin = at + n
    how = "pieces separated by blank lines" if sep == 1 else "pieces separated by two or more blank lines"
    kept = sum(1 for _, n in runs if n < sep)
    note = ""
    if blank_lines is None and sep == 2 and kept:
        note = (f"the file has runs of two or more blank lines, so those separate pieces and its {kept} single "
                "blank line(s) stay inside pieces; to split at every blank line instead, pass --blank-lines 1")
    return TextSplit(pieces, starts, how, note)


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"File '{path}' is not UTF-8 text: re-save it as UTF-8 or remove it.") from None


def pick_column(columns: list[str], wanted: str, source: str, option: str = "data.text_column") -> str:
    """The text column of a table: the one named, else the first of TEXT_COLUMNS present.

    option: how a user names the column, for the message ("data.text_column", or a command's "--text-column").
    """
    setting = f"{option}=NAME" if option.startswith("data.") else f"{option} NAME"
    if wanted:
        if wanted not in columns:
            raise UserError(f"'{source}' has no column '{wanted}' (it has: {', '.join(columns)}): "
                            f"set {option} to one of those.")
        return wanted
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    raise UserError(f"'{source}' has no 'text' or 'ascii' column (it has: {', '.join(map(str, columns)) or 'none'}): "
                    f"set {setting}.")


def _flags(values: list) -> list[bool] | None:
    """Booleans (or 'true'/'false' as CSV writes them) for every row, else None."""
    out = []
    for v in values:
        if isinstance(v, bool):
            out.append(v)
        elif isinstance(v, str) and v.strip().lower() in ("true", "false"):
            out.append(v.strip().lower() == "true")
        else:
            return None
    return out if out else None


def _jsonl(path: Path, text_column: str, option: str) -> PieceFile:
    records = []
    for number, line in enumerate(_read_utf8(path).replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"Line {number} of '{path}' is not valid JSON: write one JSON object or string "
                            "per line.") from None
        records.append((number, {"text": obj} if isinstance(obj, str) else obj))
    if not records:
        return PieceFile([], [], None, "one piece per JSON line")
    keys = list(dict.fromkeys(k for _, r in records if isinstance(r, dict) for k in r))
    named = [text_column] if text_column else [pick_column(keys, "", str(path), option), *TEXT_COLUMNS]
    texts, origins = [], []
    for number, r in records:  # without a named column, each line's first of TEXT_COLUMNS that holds a string
        value = next((r[k] for k in named if isinstance(r, dict) and isinstance(r.get(k), str)), None)
        if value is None:
            raise UserError(f"Line {number} of '{path}' has no string {' or '.join(repr(k) for k in named[-2:])} "
                            "field: give every line one.")
        texts.append(value)
        origins.append(f"{path.name}:{number}")
    column = named[0]
    cut = _flags([r.get("cut_off") for _, r in records])
    return PieceFile(texts, origins, cut, f"the '{column}' field of each JSON line")


def _table(path: Path, text_column: str, option: str) -> PieceFile:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            _read_utf8(path)  # a clear message for non-UTF-8 before pandas' own
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(path)
    except UserError:
        raise
    except Exception as exc:  # pandas raises many types for malformed files
        raise UserError(f"Could not read '{path}' as {suffix[1:]} ({str(exc).splitlines()[0]}).") from None
    column = pick_column([str(c) for c in frame.columns], text_column, str(path), option)
    rows = [(i, v) for i, v in enumerate(frame[column].tolist()) if isinstance(v, str)]
    cut = _flags(frame["cut_off"].tolist()) if "cut_off" in frame.columns else None
    return PieceFile([v for _, v in rows], [f"{path.name}:{i}" for i, _ in rows],
                     cut if cut is not None and len(cut) == len(rows) else None, f"the '{column}' column")


def _saved_dataset(path: Path, text_column: str, option: str) -> PieceFile:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    column = pick_column(ds.column_names, text_column, str(path), option)
    values = [str(v) for v in ds[column]]
    return PieceFile(values, [f"{path.name}:{i}" for i in range(len(values))], None,
                     f"the '{column}' column of a saved dataset")


def _folder(path: Path) -> PieceFile:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    return PieceFile([_read_utf8(f).replace("\r\n", "\n") for f in files], [str(f.relative_to(path)) for f in files],
                     None, "one piece per .txt file")


FORMATS = ("a .txt file (pieces separated by blank lines), a .jsonl, .csv or .parquet file (a 'text' or 'ascii' "
           "column), or a folder of .txt files (one piece each)")


def read(path: str | Path, text_column: str = "", blank_lines: int | None = None, text_files: bool = True,
         option: str = "data.text_column") -> PieceFile:
    """The pieces of a file or folder, read by its extension (module docstring); one sentence for anything else.

    text_files: False refuses a single .txt file (a data source is a folder of them, one piece each).
    option: how the user names the text column, for messages (pick_column).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"'{path}' does not exist: pass {FORMATS}.")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _saved_dataset(path, text_column, option)
        return _folder(path)
    suffix = path.suffix.lower()
    if suffix == ".txt" and text_files:
        split = split_text(_read_utf8(path), blank_lines)
        if split.cut_off is not None:  # `generate`'s headers: every sample counts, an empty one is a failed one
            return PieceFile(split.pieces, [f"{path.name}:{n}" for n in split.first_lines], split.cut_off,
                             split.how, split.note)
        kept = [(p, n) for p, n in zip(split.pieces, split.first_lines, strict=True) if p.strip()]
        return PieceFile([p for p, _ in kept], [f"{path.name}:{n}" for _, n in kept], None, split.how, split.note)
    if suffix == ".jsonl":
        return _jsonl(path, text_column, option)
    if suffix in (".csv", ".parquet"):
        return _table(path, text_column, option)
    if suffix == ".txt":
        raise UserError(f"Data file '{path}' is one .txt file: put each piece in a .txt file of its own in a folder "
                        "and pass the folder, or write the pieces as .jsonl, .csv or .parquet rows.")
    kind = f"'{suffix}' files" if suffix else "files without an extension"
    raise UserError(f"'{path}' has a type asciitune does not read ({kind}): pass {FORMATS}.")


def _control_name(ch: str) -> str:
    if ch == "\x00":
        return "a NUL byte"
    if ch == "\x1b":
        return "an escape sequence (ESC)"
    return f"a control character (U+{ord(ch):04X})"


def check_art(text: str, origin: str, source: str) -> None:
    """Refuse a piece holding NUL bytes, escape sequences or control characters other than tab, CR and LF."""
    found = _CONTROL.search(text)
    if found is None:
        return
    before = text[:found.start()].replace("\r\n", "\n").replace("\r", "\n")
    line = before.count("\n") + 1
    column = found.start() - (before.rfind("\n") + 1) + 1 if "\n" in before else found.start() + 1
    more = len(_CONTROL.findall(text)) - 1
    raise UserError(f"Piece '{origin}' of data source '{source}' holds {_control_name(found.group())} (line {line}, "
                    f"column {column}){f' and {more} more control character(s)' if more else ''}, which no art "
                    "contains: remove that file or row, or strip those characters.")


def non_ascii(texts: list[str]) -> tuple[int, list[str]]:
    """How many texts hold a character above U+007F, and the first few such characters (by first occurrence)."""
    chars: dict[str, None] = {}
    n = 0
    for t in texts:
        if not t.isascii():
            n += 1
            chars.update(dict.fromkeys(c for c in t if ord(c) > 0x7F))
    return n, [c if unicodedata.category(c)[0] != "C" else f"U+{ord(c):04X}" for c in list(chars)[:8]]
