"""Training backends. Each module imports its stack at import time, so import only one per process.

Both expose the same functions: ``load(resolved, cfg) -> (model, tokenizer, info)`` (base
model with LoRA adapters attached), ``for_inference(model)``, ``for_training(model)``,
``decode_counts(model)`` and ``decode_mode(model, since) -> str`` (how a sampling decoded) and
``load_adapter(adapter_dir, cfg, is_trainable) -> (model, tokenizer, info)``.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

from harness.errors import UserError

BACKENDS = ("unsloth", "peft")


def get(name: str) -> ModuleType:
    """Import the named backend (unsloth must come before transformers in a process)."""
    if name not in BACKENDS:
        raise UserError(f"Unknown backend '{name}': choose one of {', '.join(BACKENDS)}.")
    other = "harness.backends.unsloth_backend" if name == "peft" else "harness.backends.peft_backend"
    if other in sys.modules:
        raise RuntimeError(f"backend {other} already loaded in this process; one backend per process")
    if name == "unsloth" and "transformers" in sys.modules and "unsloth" not in sys.modules:
        raise RuntimeError("transformers was imported before unsloth; start a fresh process for the unsloth backend")
    return importlib.import_module(f"harness.backends.{name}_backend")
