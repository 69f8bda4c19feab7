"""Keep third-party chatter (library warnings, weight-loading progress bars) off a user's terminal.

A user's error output should hold our one-sentence error, not torch/torchao deprecation warnings or a
"Loading weights" bar printed while a model cache is built. Everything here is a default: a variable
the user already set wins. Download progress stays: huggingface_hub's own bars are never disabled,
so a real hub download still shows how far it is (transformers hands downloads to those bars).

Nothing here imports torch or transformers: the fixes for their modules run when something else first
imports them, so `asciitune --help` and config errors stay fast.
"""
from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Callable
from types import ModuleType

_ENV_DEFAULTS = {
    "TRANSFORMERS_VERBOSITY": "error",  # transformers' advisory logging
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # the fork warning when a child process starts
    "UNSLOTH_DISABLE_STATISTICS": "1",  # no network call from Unsloth's usage statistics
}
_QUIET_MODULES = r"(torch|torchao|transformers|trl|peft|accelerate|unsloth|unsloth_zoo|datasets|bitsandbytes)(\..*)?"
# Loggers that print through Python logging rather than `warnings`, seen on a fresh cache:
# torch's pytree registry complains when torchao registers its enums ("... is an Enum subclass ..."), and
# bitsandbytes' CPU backend reports a missing optional `kernels` package. Neither is the user's to act on.
_QUIET_LOGGERS = ("torch.utils._pytree", "torchao", "bitsandbytes")


def quiet_third_party() -> None:
    """Set quiet defaults for the libraries and ignore their warnings in this process and its children."""
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", module=_QUIET_MODULES)
    # Children inherit the filter through PYTHONWARNINGS only for categories; module filters are per process,
    # so each child entry point calls this function too.
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)  # torch's log setup resets only its registered loggers
    after_import("transformers.utils.logging", _no_transformers_bars)
    after_import("transformers.modeling_gguf_pytorch_utils", _no_gguf_bar)


def _no_transformers_bars(module: ModuleType) -> None:
    """Silence transformers' own bars ("Loading weights", "Writing model shards"), not the hub's download bars.

    transformers' `disable_progress_bar()` would also switch off huggingface_hub's bars, hiding downloads;
    its tqdm hook only sees the bars transformers draws itself.
    """
    module.set_tqdm_hook(lambda factory, args, kwargs: factory(*args, **{**kwargs, "disable": True}))


def _no_gguf_bar(module: ModuleType) -> None:
    """The GGUF reader draws "Converting and de-quantizing GGUF tensors" with plain tqdm: make it silent."""
    module.tqdm = functools.partial(module.tqdm, disable=True)


def after_import(name: str, fix: Callable[[ModuleType], None]) -> None:
    """Call fix(module) once the module `name` is imported: now if it already is, else right after its import."""
    if name in sys.modules:
        _apply(fix, sys.modules[name])
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, fix))


def _apply(fix: Callable[[ModuleType], None], module: ModuleType) -> None:
    try:
        fix(module)
    except Exception:  # a library change may move what we patch; being quiet is never worth a crash
        pass


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of one module so that a fix runs after the module executes."""

    def __init__(self, name: str, fix: Callable[[ModuleType], None]) -> None:
        self.name, self.fix = name, fix

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        """The normal spec for our module, with its loader wrapped; None for every other module."""
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one shot, and keeps the lookup below from finding this finder again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run, fix = spec.loader.exec_module, self.fix

        def exec_module(module: ModuleType) -> None:
            run(module)
            _apply(fix, module)

        spec.loader.exec_module = exec_module  # this spec's own loader instance, not a shared class
        return spec
