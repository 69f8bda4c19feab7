"""Plain Hugging Face backend: transformers + PEFT LoRA, SDPA attention, non-reentrant checkpointing, NF4 QLoRA."""
from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.backends import trl_cpu
from harness.backends.common import (
    device_name,
    gradient_checkpointing_flag,
    has_cuda,
    model_folder,
    require_4bit_device,
    torch_dtype,
)
from harness.config import RunConfig
from harness.models import ResolvedModel

NAME = "peft"
trl_cpu.install_if_no_cuda()


def _quantized(cfg: RunConfig, dtype) -> dict:
    """from_pretrained arguments for QLoRA (model.load_in_4bit): bitsandbytes NF4 as Unsloth's 4-bit path sets it."""
    if not cfg.model.load_in_4bit:
        return {}
    require_4bit_device(cfg)
    from transformers import BitsAndBytesConfig

    # NF4 with double-quantized absmax and compute in the load dtype: Unsloth's defaults for load_in_4bit, so
    # both backends train on the same quantized weights.
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=dtype)
    return {"quantization_config": bnb, "device_map": {"": torch.cuda.current_device()}}


def _base(resolved: ResolvedModel, cfg: RunConfig):
    folder = model_folder(resolved, cfg)
    dtype = torch_dtype(cfg)
    quant = _quantized(cfg, dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa", **quant)
    if has_cuda() and not quant:  # a quantized model is placed by device_map
        model = model.cuda()
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    note = "transformers + PEFT" + (" (bitsandbytes NF4)" if quant else "")
    info = {"backend": NAME, "backend_note": note, "device": device_name(), "dtype": str(dtype)}
    return model, tok, info


def _checkpointing(model, cfg: RunConfig) -> None:
    # "unsloth" means Unsloth's offloaded checkpointing; the closest plain equivalent is non-reentrant.
    if gradient_checkpointing_flag(cfg):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()


def load(resolved: ResolvedModel, cfg: RunConfig):
    """Base model plus fresh LoRA adapters with the configured settings."""
    model, tok, info = _base(resolved, cfg)
    _checkpointing(model, cfg)
    lora = cfg.lora
    torch.manual_seed(lora.random_state)  # Unsloth seeds adapter init with random_state; do the same
    model = get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
        target_modules=list(lora.target_modules), use_rslora=lora.use_rslora, task_type="CAUSAL_LM"))
    return model, tok, info


def load_adapter(adapter_dir, resolved: ResolvedModel, cfg: RunConfig, is_trainable: bool = False):
    """Base model with a saved adapter attached."""
    model, tok, info = _base(resolved, cfg)
    if is_trainable:
        _checkpointing(model, cfg)
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    return model, tok, info


def for_inference(model) -> None:
    """Eval mode with the KV cache on."""
    model.eval()
    model.config.use_cache = True


def for_training(model) -> None:
    """Back to training mode."""
    model.train()


def decode_counts(model) -> dict[str, int]:
    """No decode counters here (the unsloth backend counts its CUDA-graph replays)."""
    return {}


def decode_mode(model, since: dict[str, int] | None = None) -> str:
    """How sampling decodes here: transformers' generate, one eager step per token."""
    return "eager (transformers generate)"
