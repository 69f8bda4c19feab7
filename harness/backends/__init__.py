"""Training backends. Each module imports its stack at import time, so import only one per process.

Each backend module implements `Backend`, every function the jobs, export and bench call; `get` returns it.
tests/test_models.py checks both modules against the protocol without importing them (one backend per process).
"""
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Protocol, cast

from harness.errors import UserError

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.models import ResolvedModel


class Backend(Protocol):
    """What a backend module provides (harness/backends/<name>_backend.py)."""

    def load(self, resolved: ResolvedModel, cfg: RunConfig) -> tuple[Any, Any, dict]:
        """Base model with fresh LoRA adapters (the config's settings); (model, tokenizer, info)."""

    def load_adapter(self, adapter_dir, resolved: ResolvedModel, cfg: RunConfig,
                     is_trainable: bool = False) -> tuple[Any, Any, dict]:
        """Base model with a saved adapter attached; (model, tokenizer, info)."""

    def for_inference(self, model) -> None:
        """Ready the model for sampling (eval mode, KV cache, the backend's fast decode)."""

    def for_training(self, model) -> None:
        """Back to training mode (and free what sampling held)."""

    def decode_counts(self, model) -> dict[str, int]:
        """The backend's decode counters now, for decode_mode(model, since=...)."""

    def decode_mode(self, model, since: dict[str, int] | None = None) -> str:
        """How the sampling since `since` decoded, in words (e.g. "eager (transformers generate)")."""

BACKENDS = ("unsloth", "peft")


def get(name: str) -> Backend:
    """Import the named backend (unsloth must come before transformers in a process)."""
    if name not in BACKENDS:
        raise UserError(f"Unknown backend '{name}': choose one of {', '.join(BACKENDS)}.")
    other = "harness.backends.unsloth_backend" if name == "peft" else "harness.backends.peft_backend"
    if other in sys.modules:
        raise RuntimeError(f"backend {other} already loaded in this process; one backend per process")
    if name == "unsloth" and "transformers" in sys.modules and "unsloth" not in sys.modules:
        raise RuntimeError("transformers was imported before unsloth; start a fresh process for the unsloth backend")
    return cast(Backend, importlib.import_module(f"harness.backends.{name}_backend"))
