"""Unsloth backend: FastLanguageModel with the seed notebook's arguments.

Importing this module imports unsloth first, which patches transformers, PEFT and TRL for
the whole process; never load the peft backend in the same process. Without an NVIDIA
GPU, Unsloth falls back to CPU training (stock transformers + PEFT underneath) and the
results say so.
"""
from __future__ import annotations

import os

os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
# Unsloth replays its one-token decode step as CUDA graphs (unsloth/models/_decode_graphs.py: the eager
# step's own code, bit for bit) only inside RL trainers unless this says 1. Sampling 32 x 512 tokens of a
# 3B model is host-bound without it (hundreds of launches per token); measured in
# reports/gpu-bench/decode-graphs-h200.json. UNSLOTH_DECODE_CUDA_GRAPHS=0 in the environment turns it off.
os.environ.setdefault("UNSLOTH_DECODE_CUDA_GRAPHS", "1")
import unsloth  # noqa: E402,F401  (must precede transformers)
from unsloth import FastLanguageModel  # noqa: E402

from harness.backends import unsloth_private  # noqa: E402
from harness.backends.common import (  # noqa: E402
    device_name,
    gradient_checkpointing_flag,
    has_cuda,
    model_folder,
    require_4bit_device,
    torch_dtype,
)
from harness.config import RunConfig  # noqa: E402
from harness.models import ResolvedModel  # noqa: E402

NAME = "unsloth"


def _note() -> str:
    version = getattr(unsloth, "__version__", "?")
    if has_cuda():
        return f"Unsloth {version} (GPU kernels)"
    return f"Unsloth {version} CPU fallback (stock transformers + PEFT underneath)"


def _from_pretrained(folder, cfg: RunConfig):
    require_4bit_device(cfg)  # Unsloth's CPU fallback would otherwise fail deep inside bitsandbytes or transformers
    # The private names the fast plan and the multi-adapter engine use: one sentence now, not a silent mis-step later.
    unsloth_private.check(getattr(unsloth, "__version__", "?"))
    dtype = None if cfg.model.dtype == "auto" else torch_dtype(cfg)
    model, tok = FastLanguageModel.from_pretrained(
        str(folder), max_seq_length=cfg.model.max_seq_length, dtype=dtype, load_in_4bit=cfg.model.load_in_4bit,
        local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    info = {"backend": NAME, "backend_note": _note(), "device": device_name(), "dtype": str(model.dtype)}
    return model, tok, info


def load(resolved: ResolvedModel, cfg: RunConfig):
    """FastLanguageModel.from_pretrained + get_peft_model with the configured LoRA settings."""
    model, tok, info = _from_pretrained(model_folder(resolved, cfg), cfg)
    lora = cfg.lora
    model = FastLanguageModel.get_peft_model(
        model, r=lora.r, target_modules=list(lora.target_modules), lora_alpha=lora.alpha,
        lora_dropout=lora.dropout, bias=lora.bias, use_gradient_checkpointing=gradient_checkpointing_flag(cfg),
        random_state=lora.random_state, use_rslora=lora.use_rslora, loftq_config=None)
    return model, tok, info


def load_adapter(adapter_dir, resolved: ResolvedModel, cfg: RunConfig, is_trainable: bool = False):
    """Base model with a saved adapter attached, through Unsloth's loader."""
    from peft import PeftModel

    model, tok, info = _from_pretrained(model_folder(resolved, cfg), cfg)
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    return model, tok, info


def for_inference(model) -> None:
    """Unsloth's inference mode (fast generation path on GPU)."""
    FastLanguageModel.for_inference(model)


def for_training(model) -> None:
    """Unsloth's training mode; the decode graphs and their KV buffers of an earlier sampling are freed."""
    if graphs := _decode_graphs():
        graphs.release_for_training(model)  # what Unsloth does itself when generate() returns to training
    FastLanguageModel.for_training(model)


def decode_counts(model) -> dict[str, int]:
    """Unsloth's decode-graph counters (captures, replays, eager steps) summed over the model: they only grow."""
    stats = _decode_stats(model)
    return {k: sum(c.get(k) or 0 for c in stats) for k in ("captures", "replays", "eager_steps")}


def decode_mode(model, since: dict[str, int] | None = None) -> str:
    """How sampling decoded since decode_counts gave `since`: Unsloth's CUDA-graph replay (counts) or eager, and why."""
    if not has_cuda() or _decode_graphs() is None:
        return "eager"
    now, since = decode_counts(model), since or {}
    d = {k: v - since.get(k, 0) for k, v in now.items()}
    if d["replays"]:
        return (f"CUDA graphs (Unsloth): {d['replays']} steps replayed, {d['eager_steps']} eager, "
                f"{d['captures']} captures")
    if os.environ.get("UNSLOTH_DECODE_CUDA_GRAPHS") == "0":
        return "eager (UNSLOTH_DECODE_CUDA_GRAPHS=0)"
    why = next((c["disabled"] for c in _decode_stats(model) if c.get("disabled")), None)
    return f"eager ({why})" if why else "eager"


def _decode_stats(model) -> list[dict]:
    """Unsloth's decode-graph stats of each module that holds some (none without _decode_graphs)."""
    graphs = _decode_graphs()
    if graphs is None:
        return []
    return [graphs.stats(m) for m in model.modules() if "_unsloth_decode_graphs" in m.__dict__]


def _decode_graphs():
    """unsloth.models._decode_graphs where this Unsloth has it (2026.10 on), else None."""
    try:
        from unsloth.models import _decode_graphs
    except ImportError:
        return None
    return _decode_graphs
