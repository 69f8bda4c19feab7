"""Bad input ends in one clear sentence, no traceback, and nothing already in reports/ is lost."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import asciitune

from harness.cli.main import main


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
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "cat.txt").write_text(" /\\_/\\\n( o.o )\n > ^ <\n")
    (binary / "a.out.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x1b[31m")
    return {"empty": empty, "latin": latin, "nocol": nocol, "binary": binary}


CASES = [
    ("empty folder", ["data.source=@empty"], "holds no pieces of art"),
    ("not UTF-8", ["data.source=@latin"], "is not UTF-8"),
    ("JSONL without text column", ["data.source=@nocol"], "has no 'text' or 'ascii' column"),
    ("NUL and escape bytes", ["data.source=@binary"], "Piece 'a.out.txt' of data source"),
    ("unknown model", ["--model", "no-such-model"], "Unknown model 'no-such-model'"),
    ("unknown hub id offline", ["--model", "someone/not-cached"], "is not on this machine"),
    ("malformed config key", ["lora.rank=8"], "Unknown config key 'lora.rank'"),
    ("override without =", ["lora.r"], "Malformed override"),
    ("piece longer than max_seq_length", ["model.max_seq_length=64"], "longer than model.max_seq_length=64"),
    ("unknown config file", ["--config", "nope.toml"], "Config 'nope.toml' not found"),
]


@pytest.mark.parametrize("label, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_sentence_nothing_lost(tmp_path, reports, capsys, monkeypatch, label, args, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as the CLI subprocess tests run: no hub attempt from a test
    sources = _bad_sources(tmp_path)
    args = [a.replace("@empty", str(sources["empty"])).replace("@latin", str(sources["latin"]))
            .replace("@nocol", str(sources["nocol"])).replace("@binary", str(sources["binary"])) for a in args]
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


def test_bad_config_value_fails_in_seconds_before_any_run_folder(tmp_path):
    """The issue's own command line: a bad lora.r ends in one sentence, exit 2, and no run folder."""
    reports = tmp_path / "reports"
    start = time.monotonic()
    proc = asciitune("run", "lora.r=0", "--backend", "peft", "train.lr=1e-3", "--reports-dir", str(reports),
                     timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "lora.r" in lines[0] and ">= 1" in lines[0], proc.stderr
    assert not (reports / "runs").exists()
    assert elapsed < 20  # checked before torch is imported or a child starts


@pytest.mark.parametrize("args", [
    ["run", "--no-report", "train.lr=1e-3", "--backend", "peft", "lora.r=0"],
    ["run", "train.lr=1e-3", "--no-report", "lora.r=0", "--config", "tiny"],
    ["train", "lora.r=0", "--variant", "base", "--config", "tiny"],
], ids=["run overrides between flags", "run flags between overrides", "train"])
def test_overrides_mix_with_flags_and_bad_values_stop_every_command(tmp_path, capsys, args):
    reports = tmp_path / "reports"
    assert main(["--reports-dir", str(reports), *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: Config key 'lora.r' cannot be 0: it must be >= 1.", err
    assert not reports.exists()


def test_switches_take_booleans_on_the_command_line(capsys):
    assert main(["data", "lora.gradient_checkpointing=false", "--model", "tiny", "--samples", "0"]) == 0
    assert "error" not in capsys.readouterr().err


def test_third_party_chatter_stays_off_stderr_but_download_bars_stay():
    """After quiet_third_party(): no torch/torchao/bitsandbytes log lines, no transformers or GGUF bars,
    while huggingface_hub's own bars (downloads) stay enabled. A fresh process, as each entry point is."""
    code = """if True:
        import io
        from harness.quiet import quiet_third_party
        quiet_third_party()
        import torchao, bitsandbytes  # torch's pytree registry logs about torchao's enums; bnb about `kernels`
        from transformers.utils import logging as tl
        import transformers.modeling_gguf_pytorch_utils as gguf
        for _ in tl.tqdm(range(3), desc="Loading weights"): pass
        for _ in gguf.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors"): pass
        from huggingface_hub.utils import are_progress_bars_disabled, tqdm as hub_tqdm
        print(are_progress_bars_disabled(), hub_tqdm(range(1), file=io.StringIO()).disable)
    """
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_first_model_build_on_an_empty_cache_prints_only_the_error(tmp_path):
    """A fresh machine: the packaged and tiny models are built on first use, and none of it reaches stderr."""
    env = {"ASCIITUNE_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    proc = asciitune("--reports-dir", str(tmp_path / "reports"), "run", "--config", "tiny",
                     "model.max_seq_length=64", env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "longer than model.max_seq_length=64" in proc.stderr
    assert (tmp_path / "cache" / "models" / "tiny").is_dir()


@pytest.mark.parametrize(("flags", "message"), [
    (["--temperature", "0"], "Config key 'generate.temperature' cannot be 0.0: it must be > 0."),
    (["--top-p", "1.5"], "Config key 'generate.top_p' cannot be 1.5"),
    (["--n-samples", "0"], "Config key 'generate.n_samples' cannot be 0"),
    (["--greedy", "--temperature", "0.5"], "--greedy and --temperature both set how tokens are picked"),
], ids=["temperature 0", "top-p", "n-samples", "greedy and temperature"])
def test_generate_flags_pass_the_config_checks(monkeypatch, capsys, flags, message):
    from types import SimpleNamespace

    from harness.cli import generate
    from harness.config import RunConfig

    sampled = []
    monkeypatch.setattr(generate, "_source", lambda args: ("unexported", None, SimpleNamespace(cfg=RunConfig())))
    monkeypatch.setattr("harness.export.quality.sample_format", lambda *a: sampled.append(a))
    assert main(["generate", "some-run", *flags]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not sampled  # refused before any model loads
