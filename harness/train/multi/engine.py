"""How K fast-plan variants over one base execute their optimizer steps together: one forward and backward
per micro-batch for all K, then per adapter clip and AdamW.

    engine = MultiEngine(model, k=8)           # installs the stacked LoRA (harness.train.multi.layers)
    run = MultiRun(engine, tokenizer, variants) # harness.train.multi.run: the K variants' rows and schedules
    run.warm_up(); run.run(run.total); ...; engine.close()

A micro-batch is K packed rows [K, T], row k one packed row of variant k's step (positions restart per
sequence, block-diagonal attention inside the row); a variant with fewer rows that step, or whose training
is over, gets an empty row (padding, no targets). The base's frozen weights are read once for the K rows;
each target layer's LoRA product runs per adapter as a batched matmul. The loss is computed from the final
hidden states in chunks (harness.train.fast.chunked_loss), each row's tokens scaled by 1 / its variant's step
target count (0 for an empty row), so adapter k's gradient is its solo step's. The step's end clips each
adapter's gradient to MAX_GRAD_NORM and runs AdamW per adapter with its own lr, weight decay and step
count (factors computed on the host in double, as torch's AdamW does; an adapter that does not step gets
factors that leave its weights and state exactly as they are), then zeroes the grads.

mode="graphs" (CUDA): as harness.train.fast.engine, one graph per row length T (rows padded to a multiple of
`bucket`, so shapes are static per bucket: [K, T] inputs, [K] row scales), one forward-only graph per T for
probes, one graph for the step's end reading the step's [K, 6] AdamW factors from a static buffer; all in one
pool. mode="eager" runs the same code without capture (the CPU's mode).
"""
from __future__ import annotations

import gc

from harness.train.fast import chunked_loss
from harness.train.fast.parts import (
    BUCKET,
    MICRO_TOKENS,
    UnslothFlags,
    autocast_dtype,
    backend_of,
    checkpoint_layers,
    graph_of,
    record_graphs,
    replay,
    uncheckpoint_layers,
)
from harness.train.fast.stepmath import block_causal_mask
from harness.train.multi.layers import StackedLora
from harness.train.multi.ops import COEFFS, adamw_rows, clip_per_adapter

# Tokens in one [K, T] micro-batch on a GPU, per backend: eight rows of 768 tokens (Unsloth) or 512 (PEFT), so
# eight variants run rows of that length and activations grow no further with K (harness.train.fast.parts says
# what a token costs); fewer variants get rows up to the solo cap, more get shorter rows (never under BUCKET),
# which changes only how a step is cut into micro-batches, not its math.
MULTI_TOKENS = {"unsloth": 8 * 768, "peft": 8 * 512}


def row_cap(backend: str, k: int, cuda: bool) -> int:
    """The cap on one adapter's row in a [K, T] micro-batch (0: a whole step in one row, the CPU's default)."""
    if not cuda:
        return 0
    solo = MICRO_TOKENS.get(backend, 1024)
    return max(BUCKET, min(solo, MULTI_TOKENS.get(backend, 8 * solo) // max(k, 1)))


class MultiEngine:
    """One process's multi-adapter machinery for one model and K adapters: the stack, AdamW state, the graphs."""

    def __init__(self, model, k: int, *, mode: str = "auto", bucket: int = BUCKET, micro_tokens: int | None = None,
                 checkpoint_long: bool = True):
        """mode "auto" = graphs on CUDA, eager on CPU; micro_tokens: the cap on one adapter's row (None: row_cap);
        checkpoint_long: rows over the cap (one long sequence each) recompute each decoder layer in backward."""
        import torch

        if why := chunked_loss.supported(model):
            raise ValueError(f"the multi-adapter engine needs the chunked loss: {why}")
        self.model, self.k, self.cuda = model, k, next(model.parameters()).is_cuda
        self.backend = backend_of(model)
        self.mode = ("graphs" if self.cuda else "eager") if mode == "auto" else mode
        if self.mode == "graphs" and not self.cuda:
            raise ValueError("mode='graphs' needs a CUDA device")
        self.bucket = bucket if self.mode == "graphs" else 0
        self.micro_tokens = row_cap(self.backend, k, self.cuda) if micro_tokens is None else micro_tokens
        self.autocast_dtype = autocast_dtype(model)
        self.stack = StackedLora(model, k)
        self.stack.install()
        w = self.stack.weights
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(w), torch.zeros_like(w)
        self.coeffs = torch.zeros(k, COEFFS, dtype=torch.float32, device=w.device)  # what the step's end reads
        self.graphs: dict[int, tuple] = {}  # row length -> (graph, static inputs, [K] losses)
        self.probe_graphs: dict[int, tuple] = {}
        self.probe_eager = ""  # why probes run eager in graph mode (a failed capture), else ""
        self.end_graph = None
        self.pool = torch.cuda.graph_pool_handle() if self.mode == "graphs" else None
        self.checkpoint_long = checkpoint_long and self.micro_tokens > 0
        self.long_over = -(-self.micro_tokens // self.bucket) * self.bucket if self.bucket else self.micro_tokens
        self._checkpointing = False
        self._wrapped = checkpoint_layers(model, lambda: self._checkpointing) if self.checkpoint_long else []
        self._flags = UnslothFlags(model, return_logits=False) if self.backend == "unsloth" else None

    def begin(self) -> None:
        """Start the K variants: the stack installed, every adapter at its start, AdamW state and grads zero, in place
        (an earlier group's graphs read them where they are)."""
        self.stack.install()
        self.stack.reset()
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        if self._flags:
            self._flags.keep()
        self.model.train()

    def zero_grads(self) -> None:
        """Grads to zero in place (graphs accumulate into them where they are)."""
        self.stack.grads.zero_()

    def pause(self) -> None:
        """Training is over for now: Unsloth's own mask settings back (the stack stays installed for sampling)."""
        if self._flags:
            self._flags.restore()

    def _row_losses(self, ids, positions, labels, segments, scale):
        """Each row's summed target loss times its scale: [K] fp32."""
        additive = self.autocast_dtype if self.backend == "unsloth" else None  # Unsloth wants 0/-inf
        mask = block_causal_mask(segments, additive)
        hidden, head = chunked_loss.final_hidden(self.model, ids, positions, attention_mask=mask)
        return chunked_loss.chunked_row_losses(hidden, head, labels, scale)

    def forward_backward(self, ids, positions, labels, segments, scale):
        """One micro-batch [K, T] forward and backward into the stacked grads; returns the [K] row losses."""
        import torch

        self._checkpointing = self.checkpoint_long and ids.shape[-1] > self.long_over
        try:
            with torch.autocast(ids.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None, cache_enabled=False):
                losses = self._row_losses(ids, positions, labels, segments, scale)
            losses.sum().backward()  # adapter k's parameters touch row k only: each gets its own row's gradient
        finally:
            self._checkpointing = False
        return losses.detach()

    def forward_losses(self, ids, positions, labels, segments, scale):
        """The [K] row losses, forward only (probes)."""
        import torch

        with torch.no_grad(), torch.autocast(ids.device.type, dtype=self.autocast_dtype or torch.float32,
                                             enabled=self.autocast_dtype is not None, cache_enabled=False):
            return self._row_losses(ids, positions, labels, segments, scale)

    def end_step(self) -> None:
        """Per adapter: clip, AdamW with the factors in self.coeffs; then zero grads (eager or under capture)."""
        import torch

        s = self.stack
        with torch.no_grad():
            clip_per_adapter(s.grads)
            adamw_rows(s.weights, s.grads, self.exp_avg, self.exp_avg_sq, self.coeffs)
            s.grads.zero_()

    def step(self, batches: list[tuple], coeffs, loss_out) -> None:
        """One optimizer step of all K adapters over its micro-batches; coeffs: [K, COEFFS] for this step;
        the [K] row losses summed into loss_out (a device view), no host sync."""
        loss_out.zero_()
        for inputs in batches:
            if self.mode == "eager":
                loss_out.add_(self.forward_backward(*inputs))
            else:
                loss_out.add_(replay(self.graphs[inputs[0].shape[-1]], inputs))
        self.coeffs.copy_(coeffs, non_blocking=True)
        if self.mode == "eager":
            self.end_step()
        else:
            self.end_graph.replay()

    def capture_probes(self, batches: list[tuple]) -> int:
        """Graph mode: forward-only graphs for the probe batches' shapes not captured yet (a capture that fails leaves
        probes eager, and stats say why); returns how many were captured."""
        import torch

        todo = {tuple(b[0].shape): b[:5] for b in batches if tuple(b[0].shape) not in self.probe_graphs}
        if self.mode != "graphs" or self.probe_eager or not todo:
            return 0
        try:
            self.probe_graphs.update(record_graphs(self.forward_losses, todo, self.pool))
        except Exception as exc:  # noqa: BLE001  (measured eagerly instead; stats say why)
            self.probe_eager = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            torch.cuda.synchronize()
            return 0
        return len(todo)

    def probe(self, batches: list[tuple], sums) -> None:
        """Probe batches (MultiRun.probe_batches) forward only, each row's loss added into sums [sets, K] at its index,
        no host sync; graph mode replays the forward-only graph of each batch's shape (captured on first use)."""
        self.capture_probes(batches)
        flat = sums.view(-1)
        for inputs in batches:
            entry = self.probe_graphs.get(tuple(inputs[0].shape))
            losses = replay(entry, inputs[:5]) if entry else self.forward_losses(*inputs[:5])
            flat.index_add_(0, inputs[5], losses)

    def capture(self, examples: dict[int, tuple]) -> int:
        """Graphs for the row lengths not captured yet (examples: length -> one micro-batch); returns how many."""
        todo = {t: x for t, x in examples.items() if t not in self.graphs}
        if self.mode != "graphs" or (not todo and self.end_graph is not None):
            return 0
        self.graphs.update(record_graphs(self.forward_backward, todo, self.pool))
        if self.end_graph is None:
            self.end_graph = graph_of(self.end_step, self.pool)
        return len(todo)

    def close(self) -> None:
        """Free graphs and pool, uninstall the stack (peft's forwards back, the PEFT weights at their start), undo
        the Unsloth settings: the model is as loaded, for whatever the process trains next."""
        import torch

        self.pause()
        self.graphs.clear()
        self.probe_graphs.clear()
        self.end_graph = None
        self.stack.uninstall()
        self.stack.restore_peft()
        uncheckpoint_layers(self._wrapped)
        self._wrapped = []
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
