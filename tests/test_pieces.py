"""One reader for files of pieces (harness.pieces): what `score` reads from a file, and what data refuses.

Each case below once went wrong without a word: a trailing newline merged a file's pieces into one, two blank lines
switched the separator, a CSV was scored as one piece, a folder "did not exist", NUL and escape bytes trained.
"""
from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest

from harness.cli.score import add_parser
from harness.config import DataConfig
from harness.data import build_dataset, data_warnings, load_raw, normalize
from harness.errors import UserError
from harness.judge.samples import read_sample_file
from harness.pieces import read, split_text

CAT = " /\\_/\\\n( o.o )\n > ^ <"
DOG = " __\no-''|\\_____/)\n \\_/|_)     )\n    \\  __  /\n    (_/ (_/"
OWL = " ,_,\n(O,O)\n(   )\n-\"-\"-"


@pytest.mark.parametrize("ending", ["", "\n", "\n\n", "\n\n\n", "\n \t\n\n"])
def test_trailing_whitespace_never_changes_the_pieces(tmp_path, ending):
    f = tmp_path / "s.txt"
    f.write_text(f"\n\n{CAT}\n\n{DOG}\n\n{OWL}{ending}", encoding="utf-8")
    got = read(f)
    assert [normalize(p) for p in got.texts] == [CAT, DOG, OWL], ending  # was one merged piece with "\n\n" at the end
    assert got.how == "pieces separated by blank lines" and got.note == ""
    assert got.origins == ["s.txt:3", "s.txt:7", "s.txt:13"]  # where each piece starts, for messages


def test_a_file_that_reads_two_ways_says_which_and_how_to_ask_for_the_other(tmp_path):
    text = f"{CAT}\n\n{DOG}\n\n\n{OWL}\n\n{CAT}\n"  # single blank lines, and one run of two
    split = split_text(text)
    assert [normalize(p) for p in split.pieces] == [f"{CAT}\n\n{DOG}", f"{OWL}\n\n{CAT}"]
    assert "2 single blank line(s) stay inside pieces" in split.note and "--blank-lines 1" in split.note
    assert [normalize(p) for p in split_text(text, blank_lines=1).pieces] == [CAT, DOG, OWL, CAT]
    assert split_text(text, blank_lines=1).note == "" and split_text(text, blank_lines=2).note == ""


def test_generate_printed_output_reads_back_as_its_samples(tmp_path):
    # what `asciitune generate --score` prints, saved: headers, a sample holding a blank line, then the scores
    printed = (f"--- sample 0 (12 tokens, eos) ---\n{CAT}\n\n--- sample 1 (40 tokens, cut off) ---\n{DOG}\n\n{OWL}\n\n"
               "--- scores ---\nscored against the 16 training pieces of 'cats'\n| novelty | 0.5 |\n")
    f = tmp_path / "printed.txt"
    f.write_text(printed, encoding="utf-8")
    got = read(f)
    assert [normalize(p) for p in got.texts] == [CAT, f"{DOG}\n\n{OWL}"]
    assert "--- sample N ---" in got.how and got.cut_off == [False, True]  # read from the headers' "eos", "cut off"


def test_score_reads_the_pieces_not_one_blob(tmp_path, capsys):
    f = tmp_path / "s.txt"
    f.write_text(f"{CAT}\n\n{DOG}\n\n{OWL}\n\n", encoding="utf-8")  # one newline more than "3 pieces" had
    out = _score(capsys, str(f), "--train", str(_art_folder(tmp_path)))
    assert out.startswith("3 pieces from ") and "(pieces separated by blank lines)" in out
    g = tmp_path / "one.txt"
    g.write_text(CAT + "\n", encoding="utf-8")
    assert _score(capsys, str(g), "--train", str(_art_folder(tmp_path))).startswith("1 piece from ")  # not "1 pieces"


def test_score_reads_a_csv_column_and_a_folder_like_the_txt_file(tmp_path, capsys):
    train = str(_art_folder(tmp_path))
    csv = tmp_path / "s.csv"
    pd.DataFrame({"id": [0, 1, 2], "drawing": [CAT, DOG, OWL]}).to_csv(csv, index=False)
    with pytest.raises(UserError, match="has no 'text' or 'ascii' column .*--text-column NAME"):
        _score(capsys, str(csv), "--train", train)  # was: the whole CSV scored as one piece
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, art in enumerate([CAT, DOG, OWL]):
        (folder / f"{i}.txt").write_text(art + "\n", encoding="utf-8")
    outs = {}
    for name, args in (("csv", [str(csv), "--text-column", "drawing"]), ("folder", [str(folder)])):
        _score(capsys, *args, "--train", train, "--json", str(tmp_path / f"{name}.json"))
        outs[name] = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    assert outs["csv"]["read_as"] == "the 'drawing' column" and outs["folder"]["read_as"] == "one piece per .txt file"
    assert [normalize(r["text"]) for r in outs["csv"]["rows"]] == [CAT, DOG, OWL]
    assert outs["csv"]["samples"] == outs["folder"]["samples"]  # the same pieces, the same scores


@pytest.mark.parametrize(("name", "message"), [
    ("notes.md", "has a type asciitune does not read ('.md' files)"),
    ("samples", "files without an extension"),
    ("missing.txt", "does not exist: pass a .txt file"),
])
def test_anything_else_is_one_sentence(tmp_path, name, message):
    if name != "missing.txt":
        (tmp_path / name).write_text(CAT, encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_sample_file(tmp_path / name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_empty_folder_says_what_to_put_in_it(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(UserError, match="'.*none' holds no pieces: put .txt files in it, one piece each."):
        read_sample_file(tmp_path / "none")


@pytest.mark.parametrize(("payload", "what"), [
    (b"\x00\x01\x02ELF\x1b[31m /\\_/\\\n( o.o )\n", "a NUL byte (line 1, column 1) and 3 more"),
    (b" /\\_/\\\n( o.o )\x1b[31m\n > ^ <\n", "an escape sequence (ESC) (line 2, column 8)"),
    (b" /\\_/\\\n( o.o )\x07\n", "a control character (U+0007) (line 2, column 8)"),
])
def test_bytes_no_art_holds_are_refused_naming_the_file(tmp_path, payload, what):
    folder = _art_folder(tmp_path)
    (folder / "sub").mkdir()
    (folder / "sub" / "evil.txt").write_bytes(payload)
    with pytest.raises(UserError) as err:
        build_dataset(DataConfig(source=str(folder)))
    assert f"Piece 'sub/evil.txt' of data source '{folder}' holds {what}" in str(err.value)
    assert "\n" not in str(err.value)


def test_tabs_and_windows_newlines_are_art(tmp_path):
    folder = _art_folder(tmp_path)
    (folder / "crlf.txt").write_bytes(b" /\\_/\\\r\n(\to.o )\r\n > ^ <\r\n")
    assert any("crlf.txt" == origin for _, origin in load_raw(DataConfig(source=str(folder))))


def test_non_ascii_pieces_are_reported_with_what_the_judge_does(tmp_path):
    folder = _art_folder(tmp_path)
    (folder / "box.txt").write_text("┌──┐\n│ok│\n└──┘\n", encoding="utf-8")
    summary = build_dataset(DataConfig(source=str(folder), heldout_fraction=0.2)).summary()
    assert summary["n_non_ascii"] == 1 and summary["non_ascii_chars"][:3] == ["┌", "─", "┐"]
    warning = next(w for w in data_warnings(summary) if "non-ASCII" in w)
    assert "flags every sample holding one non_ascii, which makes it invalid" in warning
    plain = build_dataset(DataConfig(source=str(_art_folder(tmp_path / "plain")), heldout_fraction=0.2)).summary()
    assert "n_non_ascii" not in plain  # an ASCII source's summary is what it always was


def test_jsonl_lines_may_name_text_or_ascii_and_keep_empty_samples(tmp_path):
    f = tmp_path / "s.jsonl"
    rows = [{"text": CAT, "cut_off": False}, {"ascii": DOG, "cut_off": True}, {"text": "", "cut_off": False}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    got = read_sample_file(f)
    assert got.texts == [CAT, DOG, ""] and got.cut_off == [False, True, False]


def _art_folder(tmp_path):
    """A small data folder of distinct cats (enough for a split)."""
    folder = tmp_path / "art"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        faces = ["o.o", "-.-", "^.^", "O.O", "x.x", "u.u", "@.@", "*.*", ">.<", "=.=", "0.0", "q.p"]
        for i, face in enumerate(faces):
            body = "\n".join(["  " + "|" * (i % 4 + 1)] * (i % 3 + 1))
            (folder / f"cat{i}.txt").write_text(f" /\\_/\\\n( {face} ) {i}\n > ^ <\n{body}\n", encoding="utf-8")
    return folder


def _score(capsys, *argv: str) -> str:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["score", *argv])
    assert args.func(args) == 0
    return capsys.readouterr().out
