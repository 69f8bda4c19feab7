"""Model registry: offline resolution, clear errors, and a cache that rebuilds itself when damaged."""
from __future__ import annotations

import pytest

from harness import models
from harness.errors import UserError


def test_registry_lists_every_kind():
    names = [row["name"] for row in models.list_models()]
    assert names[:3] == ["smollm2-135m", "tiny", "llama-3.2-3b"]
    assert any(n.startswith("random:") for n in names)


@pytest.mark.parametrize("name, message", [
    ("no-such-model", "Unknown model 'no-such-model'"),
    ("someone/not-cached", "is not on this machine"),
    ("random:nothing-here", "Cannot build random:nothing-here"),
])
def test_unavailable_models_fail_in_one_sentence(name, message):
    with pytest.raises(UserError) as err:
        models.resolve(name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_random_architecture_needs_no_weights():
    resolved = models.resolve("random:llama-3.2-3b")
    assert resolved.random_init and resolved.architecture_config["hidden_size"] == 3072
    assert resolved.architecture_config["num_hidden_layers"] == 28


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    real = models.ensure_smollm2()  # converted once per machine; reused here through a link
    monkeypatch.setenv("ASCIITUNE_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-135m").symlink_to(real)
    tiny = models.ensure_tiny()
    weights = tiny / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])  # one flipped byte
    assert not models._cache_is_valid(tiny, models.TINY_RECIPE)
    rebuilt = models.ensure_tiny()
    assert rebuilt == tiny and weights.read_bytes() == good  # deterministic rebuild, same bytes
    (tiny / "config.json").unlink()  # a missing file is damage too
    assert models.ensure_tiny() == tiny and (tiny / "config.json").is_file()


def test_counting_tokenizer_counts_like_transformers(tmp_path):
    """The runner's transformers-free tokenizer gives AutoTokenizer's EOS and token counts on every cat, and a
    folder without tokenizer.json falls back to AutoTokenizer itself."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from harness.config import DataConfig
    from harness.data import build_dataset, token_lengths

    ds = build_dataset(DataConfig())
    pieces = ds.train + ds.heldout
    for name in ("tiny", "smollm2-135m"):
        folder = models.resolve(name).tokenizer_path or models.resolve(name).path
        fast, ref = models.counting_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
        assert isinstance(fast, models.JsonTokenizer) and fast.eos_token == ref.eos_token, name
        assert token_lengths(pieces, fast) == token_lengths(pieces, ref), name
    bare = tmp_path / "no-eos"  # a config that names no EOS: transformers knows where else to look
    shutil.copytree(folder, bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("eos_token", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    fallback = models.counting_tokenizer(bare)
    assert not isinstance(fallback, models.JsonTokenizer) and hasattr(fallback, "convert_ids_to_tokens")


def test_the_runner_reaches_its_variants_without_transformers_or_matplotlib():
    """Everything `asciitune run` does before it starts the variants' processes (CLI, config, dataset, human
    reference, length check) imports neither transformers nor matplotlib: seconds each that every variant waited."""
    import subprocess
    import sys

    code = ("import sys; from harness.cli import main; from harness.config import load_plan; "
            "from harness.train.runner import prepare; prepare(load_plan('default', [])); "
            "print(sorted(m for m in ('transformers', 'matplotlib', 'unsloth', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_both_backends_implement_every_function_the_callers_use():
    """The Backend protocol against each backend module's source (importing both would break one backend per
    process), and every `backend.<name>(` call in the package against the protocol."""
    import ast
    import inspect
    from pathlib import Path

    from harness.backends import Backend

    root = Path(__file__).resolve().parent.parent / "harness"
    wanted = {name: [p for p in inspect.signature(fn).parameters if p != "self"]
              for name, fn in vars(Backend).items() if callable(fn) and not name.startswith("_")}
    assert set(wanted) == {"load", "load_adapter", "for_inference", "for_training", "decode_counts", "decode_mode"}
    for module in ("peft_backend", "unsloth_backend"):
        tree = ast.parse((root / "backends" / f"{module}.py").read_text())
        defs = {f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, ast.FunctionDef)}
        for name, params in wanted.items():
            assert defs.get(name) == params, (module, name, defs.get(name))
    called = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "backend":
                called.add(node.func.attr)
    assert called and called <= set(wanted), called - set(wanted)
