"""Datasets of ASCII art: load, normalize, de-duplicate, group close variants, split.

    asciitune data                      # the built-in cats (from the installed catsart package)
    asciitune data data.source=my_art/  # a folder of .txt files, one piece each

Sources: "cats" (catsart's JSON files, read at run time; no art is stored in this repo),
a folder of .txt files (nested folders allowed), a .jsonl/.csv/.parquet file with a text
column, or a folder written by `datasets.Dataset.save_to_disk`.

Similarity is rapidfuzz's normalized Levenshtein similarity on whitespace-collapsed text.
On catsart's 215 distinct pieces the nearest-neighbour similarities have an empty band
between 0.80 and 0.85: above it pieces are small edits of one drawing (dropped as near
duplicates), while 0.6-0.8 holds redrawings of the same subject (kept, but grouped so a
group never straddles the split). Both thresholds are config keys.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.config import DataConfig
from harness.errors import UserError
from harness.fsutil import sha256_json


@dataclass(frozen=True)
class Piece:
    """One normalized piece of art and where it came from."""

    text: str
    origin: str  # file path or row id, for messages

    @property
    def key(self) -> str:
        """Content hash: the identity used by split manifests."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Dataset:
    """Train and held-out pieces plus what was dropped on the way."""

    name: str
    train: list[Piece]
    heldout: list[Piece]
    n_raw: int
    n_exact_duplicates: int
    n_near_duplicates: int
    n_groups: int
    n_empty: int = 0
    extra: dict = field(default_factory=dict)

    def hash(self) -> str:
        """Content hash over both sides of the split."""
        return sha256_json({"train": [p.key for p in self.train], "heldout": [p.key for p in self.heldout]})[:16]

    def summary(self) -> dict:
        """Counts for results.json."""
        return {"name": self.name, "hash": self.hash(), "n_train": len(self.train), "n_heldout": len(self.heldout),
                "n_raw": self.n_raw, "n_exact_duplicates": self.n_exact_duplicates,
                "n_near_duplicates": self.n_near_duplicates, "n_groups": self.n_groups, "n_empty": self.n_empty,
                **self.extra}

    def to_dict(self) -> dict:
        """Everything, pieces included, for handing the split to a child process."""
        return {**asdict(self), "train": [asdict(p) for p in self.train], "heldout": [asdict(p) for p in self.heldout]}

    @classmethod
    def from_dict(cls, data: dict) -> Dataset:
        """The inverse of to_dict."""
        return cls(**{**data, "train": [Piece(**p) for p in data["train"]],
                      "heldout": [Piece(**p) for p in data["heldout"]]})


def normalize(text: str) -> str:
    """Tabs to spaces, trailing spaces off, blank edge lines off, common indent off."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(8).split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return textwrap.dedent("\n".join(lines))


def collapse_whitespace(text: str) -> str:
    """Whitespace-normalized form used for every similarity comparison."""
    return " ".join(text.split())


def format_example(art: str, eos_token: str) -> str:
    """The training text: newline, art, newline, EOS (the seed notebook's format)."""
    return "\n" + art + "\n" + eos_token


# ---------------------------------------------------------------- loading

def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"File '{path}' is not UTF-8 text: re-save it as UTF-8 or remove it.") from None


def _cats() -> list[tuple[str, str]]:
    spec = importlib.util.find_spec("catsart")
    if spec is None or spec.origin is None:
        raise UserError("The built-in cats data needs the catsart package: run `pip install catsart==7.0`.")
    rows = []
    for file in sorted((Path(spec.origin).parent / "database").glob("*.json")):
        for i, art in enumerate(json.loads(file.read_text(encoding="utf-8"))):
            rows.append((art, f"catsart:{file.stem}[{i}]"))
    return rows


def _pick_column(columns: list[str], wanted: str, source: str) -> str:
    if wanted:
        if wanted not in columns:
            raise UserError(f"'{source}' has no column '{wanted}' (it has: {', '.join(columns)}): "
                            "set data.text_column to one of those.")
        return wanted
    for name in ("text", "ascii"):
        if name in columns:
            return name
    raise UserError(f"'{source}' has no 'text' or 'ascii' column (it has: {', '.join(map(str, columns)) or 'none'}): "
                    "set data.text_column=NAME.")


def _table(path: Path, text_column: str) -> list[tuple[str, str]]:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            _read_utf8(path)  # a clear message for non-UTF-8 before pandas' own
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".csv":
            _read_utf8(path)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(path)
    except UserError:
        raise
    except Exception as exc:  # pandas raises many types for malformed files
        raise UserError(f"Could not read '{path}' as {suffix[1:]} ({str(exc).splitlines()[0]}).") from None
    column = _pick_column([str(c) for c in frame.columns], text_column, str(path))
    return [(str(v), f"{path.name}:{i}") for i, v in enumerate(frame[column].tolist()) if isinstance(v, str)]


def _saved_dataset(path: Path, text_column: str) -> list[tuple[str, str]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    column = _pick_column(ds.column_names, text_column, str(path))
    return [(str(v), f"{path.name}:{i}") for i, v in enumerate(ds[column])]


def load_raw(cfg: DataConfig) -> list[tuple[str, str]]:
    """(text, origin) rows from the configured source, before any cleaning."""
    if cfg.source == "cats":
        return _cats()
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise UserError(f"Data source '{cfg.source}' does not exist: pass 'cats', a folder of .txt files, "
                        "or a .jsonl/.csv/.parquet file.")
    if path.is_file():
        if path.suffix.lower() not in (".jsonl", ".csv", ".parquet"):
            raise UserError(f"Data file '{path}' has an unsupported type: use .jsonl, .csv or .parquet "
                            "(or a folder of .txt files).")
        rows = _table(path, cfg.text_column)
    elif (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        rows = _saved_dataset(path, cfg.text_column)
    else:
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        rows = [(_read_utf8(f), str(f.relative_to(path))) for f in files]
    if not rows:
        raise UserError(f"Data source '{cfg.source}' holds no pieces of art: add .txt files (one piece each) "
                        "or rows with a text column.")
    return rows


# ---------------------------------------------------------------- cleaning and splitting

def _similarity_groups(texts: list[str], threshold: float) -> list[int]:
    """Union-find over pairs at least `threshold` similar; returns a group id per text."""
    import numpy as np
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(texts) > 1:
        collapsed = [collapse_whitespace(t) for t in texts]
        sims = process.cdist(collapsed, collapsed, scorer=Levenshtein.normalized_similarity,
                             score_cutoff=threshold, workers=1)
        for i, j in zip(*np.nonzero(np.triu(sims, k=1) >= threshold)):
            parent[find(int(j))] = find(int(i))
    return [find(i) for i in range(len(texts))]


def _split_of_group(keys: list[str], fraction: float, manifest: dict[str, str]) -> str:
    """Held out or not, decided by the group's smallest content hash, so it stays put as data grows.

    A frozen manifest wins; if a group mixes sides there (a new piece joined two groups), a
    held-out piece must never move into training, so the whole group is held out.
    """
    frozen = {manifest[k] for k in keys if k in manifest}
    if frozen:
        return "heldout" if "heldout" in frozen else "train"
    anchor = min(keys)
    return "heldout" if int(anchor[:8], 16) / 0x1_0000_0000 < fraction else "train"


def default_manifest_path(cfg: DataConfig) -> Path | None:
    """The frozen split manifest for this source, if one is checked in."""
    if cfg.split_manifest:
        return Path(cfg.split_manifest)
    if cfg.source == "cats":
        return Path(__file__).resolve().parent.parent / "data" / "splits" / "cats.json"
    return None


def build_dataset(cfg: DataConfig) -> Dataset:
    """Load, normalize, de-duplicate, group and split the configured source."""
    if not 0.0 < cfg.heldout_fraction < 1.0:
        raise UserError(f"data.heldout_fraction must be between 0 and 1, not {cfg.heldout_fraction}.")
    raw = load_raw(cfg)
    pieces, seen, n_empty, n_long = [], set(), 0, 0
    for text, origin in raw:
        art = normalize(text)
        if not art.strip():
            n_empty += 1
            continue
        if cfg.max_piece_chars and len(art) > cfg.max_piece_chars:
            n_long += 1  # left out on purpose and reported, never truncated
            continue
        if art in seen:
            continue
        seen.add(art)
        pieces.append(Piece(art, origin))
    if not pieces:
        raise UserError(f"Data source '{cfg.source}' has only empty pieces: every piece needs visible characters.")
    n_exact = len(raw) - n_empty - n_long - len(pieces)
    dup_group = _similarity_groups([p.text for p in pieces], cfg.near_duplicate_similarity)
    kept, first_of = [], set()
    for piece, g in zip(pieces, dup_group):
        if g not in first_of:
            first_of.add(g)
            kept.append(piece)
    n_near = len(pieces) - len(kept)
    groups = _similarity_groups([p.text for p in kept], cfg.variant_similarity)
    manifest_path = default_manifest_path(cfg)
    manifest = {}
    if manifest_path and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8")).get("split", {})
    members: dict[int, list[str]] = {}
    for piece, g in zip(kept, groups):
        members.setdefault(g, []).append(piece.key)
    side = {g: _split_of_group(keys, cfg.heldout_fraction, manifest) for g, keys in members.items()}
    train = [p for p, g in zip(kept, groups) if side[g] == "train"]
    heldout = [p for p, g in zip(kept, groups) if side[g] == "heldout"]
    if not train or not heldout:
        raise UserError(f"Data source '{cfg.source}' has too few distinct pieces ({len(kept)}) to split into "
                        "train and held-out sets: add more pieces or raise data.heldout_fraction.")
    n_full_train = len(train)
    if cfg.max_train_pieces > 0:
        train = train[: cfg.max_train_pieces]
    extra = {"n_train_available": n_full_train, "n_over_max_piece_chars": n_long,
             "manifest": str(manifest_path) if manifest else ""}
    return Dataset(cfg.source, train, heldout, len(raw), n_exact, n_near, len(members), n_empty, extra)


def manifest_of(ds: Dataset, fraction: float) -> dict:
    """A frozen split manifest (content hash -> side) for `asciitune data --freeze`."""
    split = {p.key: "train" for p in ds.train} | {p.key: "heldout" for p in ds.heldout}
    return {"source": ds.name, "heldout_fraction": fraction, "n": len(split), "split": dict(sorted(split.items()))}


# ---------------------------------------------------------------- statistics

def _quantiles(values: list[int]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    q = np.percentile(values, [0, 25, 50, 75, 90, 100])
    return dict(zip(["min", "p25", "median", "p75", "p90", "max"], [float(x) for x in q]))


def token_lengths(pieces: list[Piece], tokenizer) -> list[int]:
    """Token count of each training text, EOS included."""
    texts = [format_example(p.text, tokenizer.eos_token) for p in pieces]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def check_lengths(pieces: list[Piece], lengths: list[int], max_seq_length: int) -> None:
    """Refuse pieces that would be cut by max_seq_length instead of silently truncating them."""
    over = [(n, p.origin) for n, p in zip(lengths, pieces) if n > max_seq_length]
    if over:
        longest = max(over)
        raise UserError(f"{len(over)} piece(s) are longer than model.max_seq_length={max_seq_length} tokens "
                        f"(longest: {longest[0]} tokens, {longest[1]}): raise model.max_seq_length or remove them.")


def describe(ds: Dataset, tokenizer=None, max_seq_length: int = 2048) -> dict:
    """Counts, line and width distributions, token lengths and over-length pieces, per side."""
    out = {"summary": ds.summary()}
    for side, pieces in (("train", ds.train), ("heldout", ds.heldout)):
        lines = [len(p.text.split("\n")) for p in pieces]
        widths = [max(len(line) for line in p.text.split("\n")) for p in pieces]
        info = {"pieces": len(pieces), "lines": _quantiles(lines), "max_width": _quantiles(widths),
                "characters": Counter("".join(p.text for p in pieces)).most_common(10)}
        if tokenizer is not None:
            toks = token_lengths(pieces, tokenizer)
            info["tokens"] = _quantiles(toks)
            info["tokens_total"] = sum(toks)
            info["over_max_seq_length"] = sum(t > max_seq_length for t in toks)
        out[side] = info
    return out
