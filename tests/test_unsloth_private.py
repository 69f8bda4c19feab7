"""The private Unsloth names the fast plan and the multi-adapter engine rely on are checked in one place: a name
the installed Unsloth lacks ends in one sentence naming the version they were written for.

    pytest tests/test_unsloth_private.py            # the check's logic (no Unsloth import)
    pytest tests/test_unsloth_private.py -m slow    # against the installed Unsloth, in a child process (~20 s)
"""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import REPO

from harness.backends import unsloth_private
from harness.backends.unsloth_private import PRIVATE, WRITTEN_FOR
from harness.errors import UserError


def _fake_unsloth():
    """Modules holding every listed function, sources reading every listed attribute and variable."""
    modules = {}
    for e in PRIVATE:
        modules.setdefault(e.module, SimpleNamespace())
        if e.kind == "function":
            setattr(modules[e.module], e.name, lambda *a, **k: None)
    sources = {m: " ".join(e.name for e in PRIVATE if e.module == m) for m in modules}
    return modules, sources


def test_a_missing_private_name_is_one_sentence_naming_the_version(monkeypatch):
    modules, sources = _fake_unsloth()
    lookups = dict(load=modules.__getitem__, source=sources.__getitem__)
    unsloth_private.check("2026.10.9", **lookups)  # everything there: no error
    monkeypatch.delattr(modules["unsloth.models.llama"], "_decline_fused_lora_for_fsdp")
    with pytest.raises(UserError) as exc:
        unsloth_private.check("2027.1.1", **lookups)
    text = str(exc.value)
    assert text.count(". ") == 0 and text.endswith(".") and "\n" not in text  # one sentence
    assert "Unsloth 2027.1.1 lacks unsloth.models.llama._decline_fused_lora_for_fsdp" in text
    assert f"written for Unsloth {WRITTEN_FOR}" in text and f"unsloth=={WRITTEN_FOR}" in text


def test_an_attribute_unsloth_no_longer_reads_is_missing_too():
    modules, sources = _fake_unsloth()
    sources["unsloth.models.llama"] = sources["unsloth.models.llama"].replace("_unsloth_keep_padding_mask", "")
    gone = unsloth_private.missing(load=modules.__getitem__, source=sources.__getitem__)
    assert [e.name for e in gone] == ["_unsloth_keep_padding_mask"]
    with pytest.raises(UserError, match="lacks _unsloth_keep_padding_mask"):
        unsloth_private.check("x", load=modules.__getitem__, source=sources.__getitem__)


def test_optional_names_cost_no_error():
    modules, sources = _fake_unsloth()
    optional = next(e for e in PRIVATE if not e.required and e.kind == "function")
    delattr(modules[optional.module], optional.name)
    unsloth_private.check("x", load=modules.__getitem__, source=sources.__getitem__)


@pytest.mark.slow
def test_the_installed_unsloth_has_them_and_loses_one_when_monkeypatched():
    code = ("import unsloth, unsloth.models.llama as L\n"
            "from harness.backends import unsloth_private as P\n"
            "P.check(); print('CHECK OK', unsloth.__version__, flush=True)\n"
            "del L._decline_fused_lora_for_fsdp\n"
            "try:\n    P.check()\nexcept Exception as e:\n    print('ERROR', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert f"CHECK OK {WRITTEN_FOR}" in out, proc.stdout + proc.stderr[-3000:]
    assert f"ERROR Unsloth {WRITTEN_FOR} lacks unsloth.models.llama._decline_fused_lora_for_fsdp" in out


def test_stacked_decode_graphs_fingerprint_each_layer_with_its_own_adapter_and_the_stack(monkeypatch):
    # Unsloth's decode-graph fingerprint (faked here) declines a layer with several active adapters; wrapped, it sees
    # each marked layer with its first adapter only, gets the stack's state appended, and the marks stay as they were.
    seen = []

    def original(model, layers, rope_len):
        seen.append([layer._active_adapter for layer in layers])
        return None if any(isinstance(layer._active_adapter, list) for layer in layers) else ("fp", rope_len)

    graphs = SimpleNamespace(_fingerprint=original)
    monkeypatch.setitem(sys.modules, "unsloth", SimpleNamespace())
    monkeypatch.setitem(sys.modules, "unsloth.models", SimpleNamespace(_decode_graphs=graphs))
    layers = [SimpleNamespace(_active_adapter=["default", unsloth_private.MULTI_MARK]) for _ in range(2)]
    assert graphs._fingerprint(None, layers, 8) is None  # as Unsloth has it: the stacked layers are declined
    undo = unsloth_private.stacked_decode_graphs(layers, lambda: ("stack", 1234, (0, 8)))
    assert graphs._fingerprint(None, layers, 8) == ("fp", 8, ("stack", 1234, (0, 8)))
    assert seen[-1] == ["default", "default"]  # single adapters while the fingerprint was taken
    assert all(layer._active_adapter == ["default", unsloth_private.MULTI_MARK] for layer in layers)  # marks back
    undo()
    assert graphs._fingerprint is original


def test_a_decline_seen_while_stacked_is_forgotten_when_graphs_may_take_the_stack(monkeypatch):
    # Unsloth keeps its decode graphs' `disabled` reason for the model's life: a plain generate() on the stacked
    # layers (the fingerprint declines them) made every later sampling of that model eager, the batched one under
    # stacked_decode_graphs included. Entering it (and its undo) forgets that decline, and only that one.
    graphs = SimpleNamespace(_fingerprint=lambda model, layers, rope_len: None)
    monkeypatch.setitem(sys.modules, "unsloth", SimpleNamespace())
    monkeypatch.setitem(sys.modules, "unsloth.models", SimpleNamespace(_decode_graphs=graphs))
    declined = SimpleNamespace(disabled=unsloth_private.FINGERPRINT_DECLINED)
    failed = SimpleNamespace(disabled="capture failed: RuntimeError: x")
    inner = SimpleNamespace(__dict__={})
    inner.__dict__["_unsloth_decode_graphs"] = declined
    other = SimpleNamespace()
    other.__dict__["_unsloth_decode_graphs"] = failed
    model = SimpleNamespace(modules=lambda: [inner, other])
    undo = unsloth_private.stacked_decode_graphs([], lambda: (), model)
    assert declined.disabled is None and failed.disabled.startswith("capture failed")
    declined.disabled = unsloth_private.FINGERPRINT_DECLINED
    undo()
    assert declined.disabled is None


def test_the_decline_reason_is_the_one_unsloth_sets():
    source = unsloth_private._source("unsloth.models._decode_graphs")
    if not source:
        pytest.skip("Unsloth is not installed here")
    assert f'"{unsloth_private.FINGERPRINT_DECLINED}"' in source
