"""How many multi-adapter engine processes a card holds, and how many adapters each: from the card's free memory and
what one engine process costs, fixed plus per adapter.

    cost = engine_cost(arch, cfg)                 # arch: the model's config.json as a dict; cfg: a variant's RunConfig
    cost.bytes(8)                                 # one process training, probing and sampling 8 adapters
    plan = plan_engines(32, free_bytes_per_gpu(), jobs=3, cost=cost)   # EnginePlan(processes=1, group=8, ...)

One engine process holds, at its peak (sampling, with the training graphs still kept for the next group):
  fixed        the CUDA context and workspaces, the frozen weights, the probes' forward-only graphs;
  per adapter  its LoRA weights, gradients and two AdamW moments in fp32 (16 bytes a LoRA parameter), its rows'
               activations in the training graphs' pool (a [K, T] micro-batch holds K rows of up to the row cap,
               so this stops growing at K = 8: harness.train.multi.engine.row_cap), and the KV cache of its
               samples (n_samples rows of prompt + max_new_tokens, in one batched generate call of up to
               GENERATE_ROWS rows).
The LoRA state and the KV cache follow from the architecture exactly; the activations per row token and the fixed
workspace are calibrated on Llama-3.2-3B through Unsloth so that the estimate stays above two measured peaks of one
engine process on the device (one adapter, and a sweep's groups of eight: reports/gpu-bench/README.md), and the
activations scale by the model's width x depth for other models.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIB = 2 ** 30
# Activation bytes the training graphs' pool holds per row token, per unit of hidden_size x num_hidden_layers (bf16,
# Unsloth's kernels, the long rows' checkpointed graphs included): 3.7 MB a token on Llama-3.2-3B (3072 x 28). With
# FIXED_EXTRA_BYTES it puts one engine process at 14.1 GiB for one adapter and 53.6 GiB for eight, against 13.4 and
# 52.8 GiB measured in use on an H100 (reports/gpu-bench/multi-adapter-h100/multi-memory.json, bench-part2.json
# sweep_32.device_memory_peak_bytes); the 2.8 MB of harness.train.fast.parts, a solo row's, left it 3 GiB under.
ACT_BYTES_PER_TOKEN_WIDTH_LAYER = 3.7e6 / (3072 * 28)
# What an engine process holds beyond weights, LoRA state, activations and KV cache: the CUDA context, cuBLAS and
# Triton workspaces, the probes' graphs, the allocator's rounding (calibrated with the activations above).
FIXED_EXTRA_BYTES = int(2.5 * GIB)
# Of a card's free memory, what a plan leaves unused: the estimate's own error, and other processes' growth.
HEADROOM = 0.10
KV_BUCKET = 256  # Unsloth sizes its decode KV cache in multiples of this many positions


@dataclass(frozen=True)
class EngineCost:
    """One engine process's memory as a function of its adapters K (bytes)."""

    weights: int  # frozen weights as loaded
    fixed_extra: int
    lora_state: int  # per adapter: 16 bytes per LoRA parameter
    act_per_row_token: float  # per row token of a training micro-batch
    backend: str  # whose row cap a [K, T] micro-batch has (harness.train.multi.engine.row_cap)
    kv_per_sample: int  # one sample row's KV cache
    samples: int  # rows per adapter in the batched generate call
    generate_rows: int  # rows per generate call at most

    def bytes(self, k: int) -> int:
        """Peak bytes of one engine process with k adapters."""
        from harness.train.multi.engine import row_cap

        row_tokens = k * row_cap(self.backend, k, True)
        per_call = max(1, self.generate_rows // max(1, self.samples))  # adapters sampled per generate call
        rows = min(k, per_call) * self.samples
        return int(self.weights + self.fixed_extra + k * self.lora_state + self.act_per_row_token * row_tokens
                   + rows * self.kv_per_sample)

    def per_adapter(self) -> int:
        """The marginal cost of one more adapter at small K (what the K = 1 -> 8 slope gives)."""
        return self.bytes(2) - self.bytes(1)


def lora_parameters(arch: dict, r: int, targets: tuple[str, ...]) -> int:
    """LoRA parameters of one adapter over the targeted Llama-style projections: r x (in + out) per layer."""
    h, inter, layers = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"]
    heads = arch["num_attention_heads"]
    hd = arch.get("head_dim") or h // heads
    kv = arch.get("num_key_value_heads") or heads
    shapes = {"q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd), "o_proj": (heads * hd, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    return layers * sum(r * sum(shapes[t]) for t in targets if t in shapes)


def model_parameters(arch: dict) -> int:
    """A Llama-style model's parameters (embeddings, attention, MLP, norms; the head unless tied)."""
    h, inter, layers, vocab = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"], \
        arch["vocab_size"]
    heads = arch["num_attention_heads"]
    hd = arch.get("head_dim") or h // heads
    kv = arch.get("num_key_value_heads") or heads
    per_layer = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * inter + 2 * h
    return vocab * h * (1 if arch.get("tie_word_embeddings") else 2) + layers * per_layer + h


def engine_cost(arch: dict, cfg) -> EngineCost:
    """The cost of an engine process over this architecture for variants like cfg (a RunConfig)."""
    from harness.train.multi.sample import GENERATE_ROWS

    h, layers = arch["hidden_size"], arch["num_hidden_layers"]
    heads = arch["num_attention_heads"]
    hd = arch.get("head_dim") or h // heads
    kv = arch.get("num_key_value_heads") or heads
    weight_bytes = 0.56 if cfg.model.load_in_4bit else 2  # NF4 with its absmax and the bf16 norms and embeddings
    positions = -(-(cfg.generate.max_new_tokens + 64) // KV_BUCKET) * KV_BUCKET  # + a short prompt
    return EngineCost(weights=int(model_parameters(arch) * weight_bytes), fixed_extra=FIXED_EXTRA_BYTES,
                      lora_state=16 * lora_parameters(arch, cfg.lora.r, tuple(cfg.lora.target_modules)),
                      act_per_row_token=ACT_BYTES_PER_TOKEN_WIDTH_LAYER * h * layers,
                      backend=cfg.model.backend,
                      kv_per_sample=positions * layers * 2 * kv * hd * 2, samples=cfg.generate.n_samples,
                      generate_rows=GENERATE_ROWS)


def arch_of(model_name: str) -> dict | None:
    """The model's architecture (its config.json as a dict), without loading it; None when it cannot be read."""
    from harness.models import resolve

    try:
        resolved = resolve(model_name)
        if getattr(resolved, "architecture_config", None):
            return dict(resolved.architecture_config)
        return json.loads((Path(resolved.path) / "config.json").read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001  (no plan from the architecture: the caller keeps its default)
        return None


@dataclass(frozen=True)
class EnginePlan:
    """How a sweep's engine groups run: processes at once and adapters per engine group."""

    processes: int
    group: int
    why: str


def plan_engines(variants: int, free: list[int], jobs: int, cost: EngineCost, max_group: int) -> EnginePlan:
    """Adapters per engine group and engine processes at once for `variants` variants over one base: the largest
    group up to max_group whose process fits one card's free memory (less HEADROOM); then, per card, as many such
    processes as fit, summed over the cards, capped by jobs and by the number of groups. free: each visible
    card's free bytes (the caller's processes not yet started). With no card (CPU), jobs and max_group stand."""
    if not free:
        return EnginePlan(max(1, jobs), max_group, "no GPU: --jobs processes, groups of the default size")
    usable = [int(f * (1 - HEADROOM)) for f in free]
    best = max(usable)
    group = max([k for k in range(1, max_group + 1) if cost.bytes(k) <= best], default=1)
    groups = -(-variants // group)
    fit = sum(max(0, u // cost.bytes(group)) for u in usable)
    processes = max(1, min(jobs, groups, fit))
    gib = lambda n: f"{n / GIB:.1f} GiB"  # noqa: E731
    why = (f"an engine of {group} adapters needs about {gib(cost.bytes(group))} ({gib(cost.bytes(1))} at one adapter, "
           f"{gib(cost.per_adapter())} more per adapter); {fit} fit in {', '.join(gib(u) for u in usable)} usable "
           f"(free less {HEADROOM:.0%}): {processes} process(es) at once for {groups} group(s)")
    if cost.bytes(group) > best:
        why += "; even one adapter exceeds the estimate of what is free: trying anyway"
    return EnginePlan(processes, group, why)


def free_bytes_per_gpu(ids: list[str]) -> list[int]:
    """Free bytes of each listed CUDA device (CUDA_VISIBLE_DEVICES ids), read through nvidia-smi so that this process
    holds no CUDA context of its own; torch's count where nvidia-smi is missing; [] when neither answers."""
    if not ids:
        return []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=index,uuid,memory.free", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout
            rows = [[x.strip() for x in line.split(",")] for line in out.splitlines() if line.strip()]
            by_id = {r[0]: int(r[2]) * 2 ** 20 for r in rows} | {r[1]: int(r[2]) * 2 ** 20 for r in rows}
            if all(i in by_id for i in ids):
                return [by_id[i] for i in ids]
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    try:
        import torch

        return [torch.cuda.mem_get_info(i)[0] for i in range(len(ids))]
    except Exception:  # noqa: BLE001
        return []
