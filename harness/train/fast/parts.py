"""What the fast plan's two engines share (harness.train.fast.engine for one variant, harness.train.multi.engine
for K at once): checkpointed decoder layers for long rows, Unsloth's training flags, graph recording, autocast.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

from harness.train.fast import chunked_loss

BUCKET = 256  # tokens a graphed row is padded to a multiple of: micro_tokens / BUCKET graphs serve every row
# Tokens per micro-batch on a GPU, per backend: a row's activations without checkpointing are ~2.8 MB per
# token on Llama-3.2-3B through Unsloth and ~4 MB through PEFT (H200, measured when the caps were set in
# commit 702a8a0; no data file keeps it), so these keep a step's peak near the seed plan's + 50% (6.4 GB of
# bf16 weights + one row). PEFT's rows of 256 tokens took 1.42x the time of rows of 512
# (reports/gpu-bench/seed-workload.json, arms fast-peft and fast-peft-rows-256): its short rows are launch-bound,
# so it gets rows of 1024 (the GPU report says what that measured). A sequence longer than the cap is a row of
# its own and runs with each decoder layer checkpointed. On the CPU: no cap.
MICRO_TOKENS = {"unsloth": 768, "peft": 1024}


def backend_of(model) -> str:
    """The backend in use: one per process (Unsloth patches transformers globally), so imported means in use."""
    return "unsloth" if "unsloth" in sys.modules else "peft"


def autocast_dtype(model):
    """The dtype the seed plan's Trainer autocasts to on a GPU (the frozen weights' 16-bit dtype), else None."""
    import torch

    frozen = next((p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()),
                  torch.float32)
    cuda = next(model.parameters()).is_cuda
    return frozen if cuda and frozen in (torch.bfloat16, torch.float16) else None


def decoder_layers(model) -> list:
    """The decoder layers of the model's stack (the module holding embed_tokens and layers)."""
    return [layer for m in model.modules() if hasattr(m, "layers") and hasattr(m, "embed_tokens") for layer in m.layers]


def checkpoint_layers(model, active: Callable[[], bool]) -> list:
    """Give each decoder layer a forward that, while active(), goes through torch's non-reentrant checkpoint:
    only the layer's input is kept, the rest is recomputed in backward (also under capture). Returns the layers."""
    from torch.utils.checkpoint import checkpoint

    layers = decoder_layers(model)
    for layer in layers:
        def forward(*args, _inner=layer.forward, **kwargs):
            if active():
                return checkpoint(_inner, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)
            return _inner(*args, **kwargs)

        layer.forward = forward
    return layers


def uncheckpoint_layers(layers: list) -> None:
    """The class's forward again on layers checkpoint_layers wrapped."""
    for layer in layers:
        layer.__dict__.pop("forward", None)


class UnslothFlags:
    """Unsloth drops attention masks in training (it assumes right padding) unless told to keep them; a
    block-diagonal mask is what keeps packed sequences apart. keep() sets the flags, restore() undoes them
    before sampling. With return_logits, graphs get Unsloth's plain Triton CE instead of its compiled chunked
    one (only where the model's own loss runs: the chunked loss never calls Unsloth's head)."""

    NAMES = ("_unsloth_keep_padding_mask", "_unsloth_allow_packed_overlength")  # the second: rows over max length

    def __init__(self, model, return_logits: bool) -> None:
        self.model, self.return_logits = model, return_logits
        self._restore: list[tuple[object, str, object]] = []
        self._env = os.environ.get("UNSLOTH_RETURN_LOGITS")
        self.kept = False

    def keep(self) -> None:
        """Set the flags (once; again only after restore)."""
        if self.kept:
            return
        self.kept = True
        for m in self.model.modules():
            if hasattr(m, "layers") and hasattr(m, "embed_tokens"):
                for name in self.NAMES:
                    self._restore.append((m, name, getattr(m, name, None)))
                    setattr(m, name, True)
        if self.return_logits:
            os.environ["UNSLOTH_RETURN_LOGITS"] = "1"

    def restore(self) -> None:
        """Unsloth's own settings back."""
        if not self.kept:
            return
        self.kept = False
        for m, name, previous in self._restore:
            if previous is None:
                m.__dict__.pop(name, None)
            else:
                setattr(m, name, previous)
        self._restore.clear()
        if self.return_logits:
            if self._env is None:
                os.environ.pop("UNSLOTH_RETURN_LOGITS", None)
            else:
                os.environ["UNSLOTH_RETURN_LOGITS"] = self._env


def graph_of(fn, pool):
    """fn captured once as a CUDA graph in the shared pool (the step's end: clip, AdamW, zero grads)."""
    import torch

    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, pool=pool):
        fn()
    return g


def record_graphs(fn, examples: dict[int, tuple], pool) -> dict[int, tuple]:
    """One CUDA graph of fn per row length (examples: length -> one row's inputs), in the shared pool, after one
    eager call each on a side stream; length -> (graph, static inputs, output)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # kernels' first calls and autotuning, outside any capture
        for inputs in examples.values():
            fn(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # the eager warm-up's blocks: else they stay reserved beside the graph pool
    out = {}
    for t, inputs in sorted(examples.items(), reverse=True):  # longest first: shorter ones reuse its blocks
        static = tuple(x.clone() for x in inputs)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=pool):
            result = fn(*static)
        out[t] = (g, static, result)
    return out


def replay(entry: tuple, inputs: tuple):
    """Copy inputs into a recorded graph's static inputs, replay it, return its output (no host sync)."""
    g, static, out = entry
    for dst, src in zip(static, inputs):
        dst.copy_(src, non_blocking=True)
    g.replay()
    return out


def loss_mode(model, asked: str) -> tuple[str, str]:
    """("chunked" | "model", why not chunked): "auto" takes the chunked loss where the model allows it."""
    note = chunked_loss.supported(model) if asked != "model" else "asked for"
    if asked == "chunked" and note:
        raise ValueError(f"loss='chunked' cannot serve this model: {note}")
    return ("model" if note else "chunked"), note
