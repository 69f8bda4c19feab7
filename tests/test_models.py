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
