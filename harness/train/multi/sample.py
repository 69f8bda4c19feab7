"""Sampling K adapters of the multi-adapter engine: one generate call serves up to GENERATE_ROWS rows, block k
of the rows running adapter k (harness.train.generate.generate_copies), when every variant samples alike.

    sampled, how = sample_variants(model, tok, engine, [c.generate for c in cfgs])  # [(samples, GenerationStats)]

Otherwise, or with ASCIITUNE_MULTI_SAMPLING=per-variant, each adapter is exported into the PEFT weights and
sampled alone. On Unsloth the batched call runs Unsloth's generate with every LoRA fast path sent through the
stacked layers (harness.backends.unsloth_private.plain_lora_forwards), which its CUDA-graph decode declines; by
default its graphs replay the stacked model's one-token step anyway (unsloth_private.stacked_decode_graphs: the
segments it captures run the stacked LoRA products of every row's own adapter), which gives the eager decode's
tokens (tests/test_multi_gpu.py, passed on an H100: reports/gpu-bench/README.md). ASCIITUNE_MULTI_DECODE_GRAPHS=0
samples eager. Each result records how it sampled (GenerationStats.decode).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

from harness.train.generate import generate_copies, generate_samples
from harness.train.multi.engine import MultiEngine

GENERATE_ROWS = 256  # rows per batched generate call: the KV cache grows with rows x length
SAMPLING_ENV = "ASCIITUNE_MULTI_SAMPLING"  # "per-variant": each adapter sampled alone even when settings match
GRAPHS_ENV = "ASCIITUNE_MULTI_DECODE_GRAPHS"  # "1" (default): graphed batched decode on Unsloth; "0": eager
UNSLOTH_GRAPHS = "UNSLOTH_DECODE_CUDA_GRAPHS"


def sample_variants(model, tokenizer, engine: MultiEngine, gcfgs: list,
                    progress: Callable[[int], None] | None = None) -> tuple[list[tuple], str]:
    """Each adapter's (samples, GenerationStats), or the exception its own sampling raised, and how they were drawn
    (batched across adapters when every variant samples alike, else per variant; a batched call that fails falls
    back to per variant, and says so)."""
    k = engine.k
    why = ""
    if any(g != gcfgs[0] for g in gcfgs):
        why = "generation settings differ between variants"
    elif os.environ.get(SAMPLING_ENV, "") == "per-variant":
        why = f"{SAMPLING_ENV}=per-variant"
    if not why:
        group = max(1, GENERATE_ROWS // max(1, min(gcfgs[0].batch_size, gcfgs[0].n_samples)))
        undo = None
        try:
            out: list[tuple] = []
            engine.stack.install()
            undo = _decode_graphs(engine)
            for lo in range(0, k, group):
                hi = min(k, lo + group)
                engine.stack.window = (lo, hi)
                out += generate_copies(model, tokenizer, gcfgs[0], hi - lo, progress)
            return out, f"batched: {k} adapters in generate calls of up to {group} adapters"
        except Exception as exc:  # noqa: BLE001  (sampled per variant instead, and the result says why)
            why = f"batched sampling failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            print(f"[multi] {why}; sampling each variant alone", file=sys.stderr, flush=True)
        finally:
            if undo:
                undo()
            engine.stack.window = (0, k)
            engine.stack.uninstall()
    out = []
    for j in range(k):  # a variant whose sampling fails gets its exception in its place; the others go on
        engine.stack.export(j)
        try:
            out.append(generate_samples(model, tokenizer, gcfgs[j], progress))
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out, f"per variant ({why})"


def _decode_graphs(engine: MultiEngine):
    """On Unsloth with GRAPHS_ENV "1" (the default): let its CUDA-graph decode replay the stacked model's step; with
    "0" turn its decode graphs off for the call; the undo, or None."""
    flag = os.environ.get(GRAPHS_ENV, "1")
    if "unsloth" not in sys.modules or not engine.cuda or flag not in ("0", "1"):
        return None
    if flag == "0":
        before = os.environ.get(UNSLOTH_GRAPHS)
        os.environ[UNSLOTH_GRAPHS] = "0"  # read per generate call (harness.backends.unsloth_backend)

        def undo() -> None:
            if before is None:
                os.environ.pop(UNSLOTH_GRAPHS, None)
            else:
                os.environ[UNSLOTH_GRAPHS] = before

        return undo
    from harness.backends import unsloth_private

    stack = engine.stack
    return unsloth_private.stacked_decode_graphs(stack.layers, lambda: (stack.weights.data_ptr(), stack.window),
                                                 engine.model)
