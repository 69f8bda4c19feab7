"""Data: normalization, de-duplication, a leak-free and stable split, and every bring-your-own format."""
from __future__ import annotations

import json

import pytest
from rapidfuzz.distance import Levenshtein

from harness.config import DataConfig
from harness.data import build_dataset, collapse_whitespace, format_example, load_raw, normalize
from harness.errors import UserError


def test_normalize_tabs_trailing_spaces_and_common_indent():
    raw = "\n\n    /\\_/\\   \n\t( o.o )\n     > ^ <\t\n\n"
    assert normalize(raw) == "/\\_/\\\n    ( o.o )\n > ^ <"


def test_training_text_format():
    assert format_example("/\\_/\\", "<eos>") == "\n/\\_/\\\n<eos>"


def test_cats_counts_match_the_original_set(cats):
    s = cats.summary()
    # catsart 7.0 ships 228 pieces; the original set had 201 with 6 duplicate pairs (~195 distinct).
    assert s["n_raw"] == 228
    assert 175 <= s["n_train"] + s["n_heldout"] <= 200
    assert 0.08 <= s["n_heldout"] / (s["n_train"] + s["n_heldout"]) <= 0.22  # about 15%, hash-based


def test_no_piece_or_close_variant_on_both_sides(cats):
    train = [collapse_whitespace(p.text) for p in cats.train]
    threshold = DataConfig().variant_similarity
    assert not {p.key for p in cats.train} & {p.key for p in cats.heldout}
    for piece in cats.heldout:
        best = max(Levenshtein.normalized_similarity(collapse_whitespace(piece.text), t) for t in train)
        # Grouping joins every pair at or above the threshold, so no cross-split pair may reach it.
        assert best < threshold, (piece.origin, best)


def test_split_is_deterministic_and_stays_put_when_pieces_are_added(tmp_path, cats):
    folder = tmp_path / "art"
    folder.mkdir()
    for i, p in enumerate(cats.train[:40] + cats.heldout[:8]):
        (folder / f"{i:03d}.txt").write_text(p.text, encoding="utf-8")
    first = build_dataset(DataConfig(source=str(folder)))
    again = build_dataset(DataConfig(source=str(folder)))
    assert [p.key for p in first.heldout] == [p.key for p in again.heldout]
    (folder / "new").mkdir()
    for i, p in enumerate(cats.train[40:60]):
        (folder / "new" / f"{i:03d}.txt").write_text(p.text, encoding="utf-8")
    grown = build_dataset(DataConfig(source=str(folder)))
    side = {p.key: "train" for p in grown.train} | {p.key: "heldout" for p in grown.heldout}
    assert all(side[p.key] == "train" for p in first.train)
    assert all(side[p.key] == "heldout" for p in first.heldout)


def test_frozen_manifest_is_honoured(tmp_path, cats):
    folder = tmp_path / "art"
    folder.mkdir()
    pieces = cats.train[:30]
    for i, p in enumerate(pieces):
        (folder / f"{i}.txt").write_text(p.text, encoding="utf-8")
    manifest = tmp_path / "split.json"
    forced = {p.key: "train" for p in pieces} | {pieces[0].key: "heldout", pieces[1].key: "heldout"}
    manifest.write_text(json.dumps({"split": forced}))
    ds = build_dataset(DataConfig(source=str(folder), split_manifest=str(manifest)))
    # Forced pieces are held out; close variants of them may follow (a group never straddles).
    assert {pieces[0].key, pieces[1].key} <= {p.key for p in ds.heldout}
    assert len(ds.heldout) < 6


def test_near_duplicates_are_dropped_exact_duplicates_counted(tmp_path, cats):
    folder = tmp_path / "art"
    (folder / "a" / "b").mkdir(parents=True)
    base = max(cats.train, key=lambda p: len(p.text)).text
    (folder / "one.txt").write_text(base)
    (folder / "a" / "two.txt").write_text(base + "   \n")  # same after normalization
    (folder / "a" / "b" / "three.txt").write_text(base[:-1] + ("x" if base[-1] != "x" else "y"))  # one edit
    for i, p in enumerate(cats.heldout[:10]):
        (folder / f"other{i}.txt").write_text(p.text)
    ds = build_dataset(DataConfig(source=str(folder)))
    assert ds.n_exact_duplicates == 1 and ds.n_near_duplicates >= 1


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "saved"])
def test_table_formats_load_the_same_pieces(tmp_path, fmt, cats):
    import datasets
    import pandas as pd

    texts = [p.text for p in cats.train[:12]]
    frame = pd.DataFrame({"id": range(len(texts)), "ascii": texts})
    if fmt == "jsonl":
        path = tmp_path / "art.jsonl"
        frame.to_json(path, orient="records", lines=True)
    elif fmt == "csv":
        path = tmp_path / "art.csv"
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        path = tmp_path / "art.parquet"
        frame.to_parquet(path)
    else:
        path = tmp_path / "saved"
        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))
    rows = load_raw(DataConfig(source=str(path)))
    assert [normalize(t) for t, _ in rows] == texts


def test_named_text_column(tmp_path):
    path = tmp_path / "art.jsonl"
    path.write_text(json.dumps({"drawing": " /\\_/\\\n( o.o )\n > ^ <"}) + "\n")
    assert len(load_raw(DataConfig(source=str(path), text_column="drawing"))) == 1


@pytest.mark.parametrize("setup, message", [
    ("empty", "holds no pieces of art"),
    ("latin1", "is not UTF-8"),
    ("nocolumn", "has no 'text' or 'ascii' column"),
    ("missing", "does not exist"),
    ("badtype", "unsupported type"),
])
def test_bad_sources_fail_in_one_sentence(tmp_path, setup, message):
    if setup == "empty":
        source = tmp_path / "empty"
        source.mkdir()
    elif setup == "latin1":
        source = tmp_path / "art"
        source.mkdir()
        (source / "cat.txt").write_bytes("caf\xe9 /\\_/\\".encode("latin-1"))
    elif setup == "nocolumn":
        source = tmp_path / "art.jsonl"
        source.write_text(json.dumps({"body": "x"}) + "\n")
    elif setup == "missing":
        source = tmp_path / "nope"
    else:
        source = tmp_path / "art.xlsx"
        source.write_text("x")
    with pytest.raises(UserError) as err:
        build_dataset(DataConfig(source=str(source)))
    assert message in str(err.value) and "\n" not in str(err.value)
