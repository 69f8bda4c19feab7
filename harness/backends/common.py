"""Pieces both backends share: device and dtype choice, random-weight folders, adapter config."""
from __future__ import annotations

import json
from pathlib import Path

from harness.config import RunConfig
from harness.errors import UserError
from harness.fsutil import sha256_json
from harness.models import ResolvedModel, building_dir, cache_root, move_into_place

RANDOM_MARKER = "asciitune-random.json"


def has_cuda() -> bool:
    """True when an NVIDIA GPU is usable."""
    import torch

    return torch.cuda.is_available()


def require_4bit_device(cfg: RunConfig) -> None:
    """Refuse model.load_in_4bit without CUDA, in one sentence, for both backends alike."""
    if cfg.model.load_in_4bit and not has_cuda():
        raise UserError("model.load_in_4bit needs an NVIDIA GPU (bitsandbytes NF4 kernels): set "
                        "model.load_in_4bit=false on this machine.")


def torch_dtype(cfg: RunConfig):
    """The dtype to load weights in: bf16 on a GPU that has it, float32 on CPU, unless configured."""
    import torch

    if cfg.model.dtype != "auto":  # one of the names config.RANGES allows
        return getattr(torch, cfg.model.dtype)
    if has_cuda():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def materialize_random(resolved: ResolvedModel, dtype) -> Path:
    """Write random weights for an architecture once (seed 0), so both backends load identical ones."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    arch = dict(resolved.architecture_config or {})
    key = sha256_json({"arch": arch, "dtype": str(dtype), "tokenizer": str(resolved.tokenizer_path)})[:16]
    folder = cache_root() / "random" / key
    if (folder / RANDOM_MARKER).is_file():  # written last, so its presence means complete
        return folder
    model_type = arch.pop("model_type", "llama")
    for k in ("architectures", "transformers_version", "quantization_config", "_name_or_path", "dtype",
              "torch_dtype"):
        arch.pop(k, None)
    tok = AutoTokenizer.from_pretrained(resolved.tokenizer_path)
    config = AutoConfig.for_model(model_type, **arch)
    torch.manual_seed(0)
    device = "cuda" if has_cuda() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tmp = building_dir(folder)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / RANDOM_MARKER).write_text(json.dumps({"arch": arch, "seed": 0}))
    move_into_place(tmp, folder, lambda f: (f / RANDOM_MARKER).is_file())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def model_folder(resolved: ResolvedModel, cfg: RunConfig) -> Path:
    """The folder to load: the resolved one, or random weights materialized for it."""
    if resolved.random_init:
        return materialize_random(resolved, torch_dtype(cfg))
    return resolved.path


def gradient_checkpointing_flag(cfg: RunConfig) -> bool | str:
    """Map lora.gradient_checkpointing (checked by config.RANGES) onto what the backends accept."""
    return {"unsloth": "unsloth", "true": True, "false": False}[cfg.lora.gradient_checkpointing]


def device_name() -> str:
    """Human name of the compute device, for results."""
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
