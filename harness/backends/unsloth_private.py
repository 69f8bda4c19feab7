"""The private Unsloth names asciitune relies on, in one place, checked when the unsloth backend loads a model.

    from harness.backends import unsloth_private
    unsloth_private.check()        # UserError, one sentence, when the installed Unsloth lacks one

Unsloth's public API covers loading, get_peft_model, for_training / for_inference and generate. The fast
plan and the multi-adapter engine reach further: attributes that Unsloth's own code reads off the model,
environment variables it reads, and a few module-level functions. Each is listed in PRIVATE with what it
is for; "function" entries must exist in their module, "attribute" and "env" entries must still be read by
their module's source (a renamed flag would otherwise be set and silently ignored). They were written
against Unsloth WRITTEN_FOR; another version may have renamed or dropped them, which `check` says in one
sentence before any training. Optional entries only cost speed when absent (the code says what it did).
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import UserError

WRITTEN_FOR = "2026.10.9"
MULTI_MARK = "asciitune-multi"  # the second active adapter name the multi engine gives each LoRA layer
# What Unsloth's decode sets as its model's `disabled` reason when its fingerprint declines (written for WRITTEN_FOR):
# the reason is sticky for the model's life, so a decline seen while the stack was installed without
# stacked_decode_graphs (a plain generate() on the stacked model) would keep every later sampling eager.
FINGERPRINT_DECLINED = "parameters on several / non-CUDA devices or a non-LoRA adapter"


@dataclass(frozen=True)
class Private:
    """One private Unsloth name and what asciitune uses it for."""

    kind: str  # "function" (must exist in module), "attribute" or "env" (module's source must read it)
    module: str
    name: str
    why: str
    required: bool = True


PRIVATE = (
    Private("attribute", "unsloth.models.llama", "_unsloth_keep_padding_mask",
            "set on the decoder stack, keeps the fast plan's block-diagonal masks in training "
            "(harness.train.fast.parts.UnslothFlags)"),
    Private("attribute", "unsloth.models.llama", "_unsloth_allow_packed_overlength",
            "set on the decoder stack, stops Unsloth cutting packed rows at max_seq_length"),
    Private("env", "unsloth.models.llama", "UNSLOTH_RETURN_LOGITS",
            "graphs of the model's own loss use the plain Triton cross-entropy (only without the chunked loss)"),
    Private("env", "unsloth.models._decode_graphs", "UNSLOTH_DECODE_CUDA_GRAPHS",
            "sampling replays the one-token decode step as CUDA graphs (harness.backends.unsloth_backend)", False),
    Private("function", "unsloth.models._decode_graphs", "release_for_training",
            "frees an earlier sampling's decode graphs before training", False),
    Private("function", "unsloth.models._decode_graphs", "stats",
            "counts decode-graph replays, for GenerationStats.decode", False),
    Private("attribute", "unsloth.models._decode_graphs", "_unsloth_decode_graphs",
            "marks the modules whose decode-graph stats are read", False),
    Private("function", "unsloth.models.llama", "_fused_lora_modules",
            "the modules whose fused LoRA forwards the multi-adapter engine sets aside and later restores"),
    Private("function", "unsloth.models.llama", "_decline_fused_lora_for_fsdp",
            "puts peft's forwards back on fused-LoRA layers while the multi-adapter engine's stack is installed"),
    Private("function", "unsloth.models._decode_graphs", "_fingerprint",
            "what a captured decode step baked in: the multi-adapter engine's batched sampling wraps it so that the "
            "stacked layers (whose fast paths call the layer) are graphed too, with the stack's weights in it", False),
    Private("attribute", "unsloth.models._decode_graphs", FINGERPRINT_DECLINED,
            "the decode graphs' sticky decline reason that clear_stacked_decline forgets for the stacked layers "
            "(else one plain generate() on them keeps every later sampling eager)", False),
    Private("function", "unsloth.kernels.utils", "_has_multiple_active_adapters",
            "Unsloth's LoRA fast paths (fused kernels, fast_linear_forward in generation) call the layer instead "
            "of reading its weights when it has several active adapters: the multi-adapter engine marks its "
            "layers so, and batched sampling then runs each row with its own adapter"),
)


def _source(module: str) -> str:
    """A module's source text, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def missing(entries=PRIVATE, load: Callable[[str], object] = importlib.import_module,
            source: Callable[[str], str] = _source) -> list[Private]:
    """The entries the installed Unsloth lacks (load and source are injectable for tests)."""
    gone = []
    for e in entries:
        try:
            ok = hasattr(load(e.module), e.name) if e.kind == "function" else e.name in source(e.module)
        except (ImportError, OSError):
            ok = False
        if not ok:
            gone.append(e)
    return gone


def message(version: str, gone: list[Private]) -> str:
    """The one sentence a missing required entry ends in."""
    names = ", ".join(f"{e.module}.{e.name}" if e.kind == "function" else e.name for e in gone)
    return (f"Unsloth {version} lacks {names}, private to Unsloth and relied on by asciitune's fast plan as written "
            f"for Unsloth {WRITTEN_FOR}: install unsloth=={WRITTEN_FOR} (and unsloth_zoo of the same version), or use "
            "--backend peft.")


def check(version: str | None = None, **lookups) -> None:
    """Raise UserError when the installed Unsloth lacks a required private name (version: unsloth.__version__)."""
    gone = [e for e in missing(**lookups) if e.required]
    if gone:
        if version is None:
            import unsloth

            version = getattr(unsloth, "__version__", "?")
        raise UserError(message(version, gone))


def plain_lora_forwards(model, layers: list) -> Callable[[], None]:
    """While K stacked adapters are installed: peft's forwards on Unsloth's fused-LoRA modules (their kernels read
    one adapter's weights directly) and each LoRA layer marked with a second active adapter (so every Unsloth
    fast path that checks calls the layer). Returns the function that undoes both."""
    from unsloth.models import llama

    fused = llama._fused_lora_modules(model)
    saved = [(m, name, m.__dict__[name]) for m in fused for name in ("apply_qkv", "apply_o", "forward",
                                                                        "_unsloth_forward") if name in m.__dict__]
    llama._decline_fused_lora_for_fsdp(model, "asciitune's multi-adapter engine stacks several adapters")
    marks = [(layer, layer._active_adapter) for layer in layers]
    for layer, active in marks:
        first = active if isinstance(active, str) else active[0]
        layer._active_adapter = [first, MULTI_MARK]

    def undo() -> None:
        for layer, active in marks:
            layer._active_adapter = active
        for m, name, value in saved:
            setattr(m, name, value)
        clear_stacked_decline(model)  # a generate() while stacked declined for good: one adapter again graphs

    return undo


def decline_fused_lora(model, why: str) -> Callable[[], None]:
    """peft's own LoRA forwards on every layer Unsloth fused (its kernels stay out of this model's steps): a solo run
    with the LoRA arithmetic of the multi-adapter engine's stacked layers. Returns the function that undoes it."""
    from unsloth.models import llama

    fused = llama._fused_lora_modules(model)
    saved = [(m, name, m.__dict__[name]) for m in fused for name in ("apply_qkv", "apply_o", "forward",
                                                                        "_unsloth_forward") if name in m.__dict__]
    llama._decline_fused_lora_for_fsdp(model, why)

    def undo() -> None:
        for m, name, value in saved:
            setattr(m, name, value)

    return undo


def clear_stacked_decline(model) -> int:
    """Forget Unsloth's sticky decode-graph decline of a model whose decline came from the stacked layers (the
    fingerprint's reason, no other: a failed capture stays declined); returns how many states were cleared."""
    cleared = 0
    for module in model.modules():
        state = module.__dict__.get("_unsloth_decode_graphs")
        if state is not None and getattr(state, "disabled", None) == FINGERPRINT_DECLINED:
            state.disabled = None
            cleared += 1
    return cleared


def stacked_decode_graphs(layers: list, stack_state: Callable[[], tuple], model=None) -> Callable[[], None]:
    """While K stacked adapters sample (plain_lora_forwards in force): Unsloth's CUDA-graph decode takes the stacked
    model too. Its fingerprint declines layers with several active adapters because a graph would bake one adapter's
    weights into fast kernels; the marked layers' fast paths call the layer instead, whose stacked forward a graph
    replays like any other module. So the fingerprint is taken with each layer's own single adapter and the
    stack's state (its weight buffer and window of adapters) added. model: its sticky decline of an earlier plain
    generate() on the stacked layers is cleared on entry and on undo (clear_stacked_decline). Returns the undo."""
    from unsloth.models import _decode_graphs

    if model is not None:
        clear_stacked_decline(model)
    original = _decode_graphs._fingerprint

    def fingerprint(model, decoder_layers, rope_len):
        marks = [(layer, layer._active_adapter) for layer in layers]
        for layer, active in marks:
            layer._active_adapter = active[0] if isinstance(active, list) else active
        try:
            found = original(model, decoder_layers, rope_len)
        finally:
            for layer, active in marks:
                layer._active_adapter = active
        return None if found is None else (*found, stack_state())

    _decode_graphs._fingerprint = fingerprint

    def undo() -> None:
        _decode_graphs._fingerprint = original
        if model is not None:
            clear_stacked_decline(model)

    return undo
