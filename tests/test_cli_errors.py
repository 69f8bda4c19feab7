"""Bad input ends in one clear sentence, no traceback, and nothing already in reports/ is lost."""
from __future__ import annotations

import json

import pytest

from harness.cli import main


@pytest.fixture
def reports(tmp_path):
    """A reports folder that already holds an earlier run, which must survive every failure."""
    earlier = tmp_path / "reports" / "runs" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text(json.dumps({"schema_version": 1, "run_id": "earlier"}))
    return tmp_path / "reports"


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _bad_sources(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "cat.txt").write_bytes("caf\xe9\n /\\_/\\".encode("latin-1"))
    nocol = tmp_path / "art.jsonl"
    nocol.write_text(json.dumps({"body": " /\\_/\\"}) + "\n")
    return {"empty": empty, "latin": latin, "nocol": nocol}


CASES = [
    ("empty folder", ["data.source=@empty"], "holds no pieces of art"),
    ("not UTF-8", ["data.source=@latin"], "is not UTF-8"),
    ("JSONL without text column", ["data.source=@nocol"], "has no 'text' or 'ascii' column"),
    ("unknown model", ["--model", "no-such-model"], "Unknown model 'no-such-model'"),
    ("unknown hub id offline", ["--model", "someone/not-cached"], "is not on this machine"),
    ("malformed config key", ["lora.rank=8"], "Unknown config key 'lora.rank'"),
    ("override without =", ["lora.r"], "Malformed override"),
    ("piece longer than max_seq_length", ["model.max_seq_length=64"], "longer than model.max_seq_length=64"),
    ("unknown config file", ["--config", "nope.toml"], "Config 'nope.toml' not found"),
]


@pytest.mark.parametrize("label, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_sentence_nothing_lost(tmp_path, reports, capsys, label, args, message):
    sources = _bad_sources(tmp_path)
    args = [a.replace("@empty", str(sources["empty"])).replace("@latin", str(sources["latin"]))
            .replace("@nocol", str(sources["nocol"])) for a in args]
    before = _snapshot(reports)
    code = main(["--reports-dir", str(reports), "run", "--config", "tiny", *args]
                if "--config" not in args else ["--reports-dir", str(reports), "run", *args])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert "Traceback" not in err
    assert _snapshot(reports) == before  # nothing lost, nothing half-written


def test_unknown_variant(reports, capsys):
    assert main(["--reports-dir", str(reports), "run", "--config", "tiny", "--variants", "nope"]) == 2
    assert "Unknown variant(s) nope" in capsys.readouterr().err
