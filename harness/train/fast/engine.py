"""How the fast plan executes optimizer steps: packed micro-batches, fused AdamW, eager or CUDA graphs.

    engine = Engine(model, cfg.train)                        # once per process and model
    run = FastRun(engine, tokenizer, texts, cfg.train)       # per variant (harness.train.fast.run)
    run.warm_up(); run.run(run.total); losses = run.losses(); run.pause()
    ... probe, sample ...; the next variant over the same base: FastRun(engine, ...) replays the same graphs

The step math is harness.train.fast.stepmath's (the seed plan's). A step's sequences are packed into rows of at
most `micro_tokens` tokens (padding-free inside a row: positions restart per sequence, attention is
block-diagonal); each row's loss is divided by the whole step's target count and the rows' gradients add
up in .grad, then clip, AdamW and zero grads end the step.

mode="graphs": one CUDA graph per row length (forward + backward into .grad; rows padded to a multiple of
`bucket` with a masked segment whose labels are -100, so a few graphs serve every step) and one for the
step's end (clip, AdamW, zero grads), plus one forward-only graph per row length for the probes
(`probe`: the eval points' losses over packed rows of the probe texts). No compiler: warm-up is one
eager forward/backward per new row length plus one capture each. All graphs share one memory pool:
they replay one at a time on one stream, and nothing captured outlives a replay but each graph's loss
output. Graphs read the LoRA weights, grads and
AdamW state where they live, so a later variant over the same base resets those in place (`Engine.begin`)
and replays the graphs: a sweep captures once per process. Attention for a packed row: "mask" (a 4D
block-diagonal mask built on the device, so it can live inside a graph) or "varlen" (Unsloth only: host-side
lengths per step, so eager only).
"""
from __future__ import annotations

import contextlib
import gc
import re

from harness.train.fast import chunked_loss
from harness.train.fast.parts import (  # noqa: F401  (BUCKET, MICRO_TOKENS, backend_of: re-exported)
    BUCKET,
    MICRO_TOKENS,
    UnslothFlags,
    autocast_dtype,
    backend_of,
    checkpoint_layers,
    graph_of,
    loss_mode,
    record_graphs,
    replay,
    uncheckpoint_layers,
)
from harness.train.fast.stepmath import (
    ADAM_BETAS,
    ADAM_EPS,
    MAX_GRAD_NORM,
    NO_DECAY,
    block_causal_mask,
)


def make_optimizer(model, cfg, capturable: bool):
    """Fused torch AdamW over the trainable parameters, with transformers' weight-decay groups."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(re.search(pat, name.lower()) for pat in NO_DECAY) else decay).append(p)
    cuda = next(model.parameters()).is_cuda
    # A tensor lr lets a captured step read the current lr from the device; the CPU needs a float.
    lr = torch.tensor(cfg.lr, dtype=torch.float32, device="cuda") if capturable else cfg.lr
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay, "decay": True},
                          {"params": no_decay, "weight_decay": 0.0, "decay": False}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=cuda, capturable=capturable)
    # State made now, outside any capture, as AdamW would make it on its first step; Engine.begin zeroes it.
    for g in opt.param_groups:
        g["lr"] = lr
        for p in g["params"]:
            on_device = capturable or cuda  # fused and capturable AdamW keep the step count beside the weights
            opt.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu"),
                            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
    return opt


def set_lr(opt, value: float) -> None:
    """Next step's lr: a device fill for a tensor lr (no sync), else the float."""
    for g in opt.param_groups:
        if hasattr(g["lr"], "fill_"):
            g["lr"].fill_(value)
        else:
            g["lr"] = value


class Engine:
    """One process's fast-plan machinery for one model: AdamW, the graphs, and LoRA's starting values."""

    def __init__(self, model, cfg, *, mode: str = "auto", attention: str = "auto", bucket: int = BUCKET,
                 micro_tokens: int | None = None, checkpoint_long: bool = True, loss: str = "auto"):
        """cfg: the first variant's TrainConfig (lr, weight decay); mode "auto" = graphs on CUDA, eager on CPU;
        checkpoint_long: rows over micro_tokens (one long sequence each) recompute each decoder layer in backward;
        loss "auto" = the chunked loss over hidden states (harness.train.fast.chunked_loss) where the model allows it,
        else "model" (the model's own loss, which materializes a row's full-vocabulary logits)."""
        import torch

        self.model, self.cuda = model, next(model.parameters()).is_cuda
        self.backend = backend_of(model)
        self.loss, self.loss_note = loss_mode(model, loss)
        self.mode = ("graphs" if self.cuda else "eager") if mode == "auto" else mode
        if self.mode == "graphs" and not self.cuda:
            raise ValueError("mode='graphs' needs a CUDA device")
        self.attention = ("varlen" if self.backend == "unsloth" and self.mode == "eager" and self.cuda else "mask") \
            if attention == "auto" else attention
        if self.mode == "graphs" and self.attention == "varlen":
            raise ValueError("attention='varlen' reads host lengths every step; graphs need attention='mask'")
        self.bucket = bucket if self.mode == "graphs" else 0
        default = MICRO_TOKENS.get(self.backend, 1024) if self.cuda else 0
        self.micro_tokens = default if micro_tokens is None else micro_tokens
        self.autocast_dtype = autocast_dtype(model)
        self.opt = make_optimizer(model, cfg, capturable=(self.mode == "graphs"))
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.start = [p.detach().clone() for p in self.params]  # LoRA as loaded: every variant starts here
        self.weight_decay = cfg.weight_decay
        self.graphs: dict[int, tuple] = {}  # row length -> (graph, static inputs, loss output)
        self.probe_graphs: dict[int, tuple] = {}  # the same for forward-only probe rows
        self.probe_eager = ""  # why probes run eager in graph mode (a failed capture), else ""
        self.end_graph = None
        self.pool = torch.cuda.graph_pool_handle() if self.mode == "graphs" else None
        self.variants = 0
        self.checkpoint_long = checkpoint_long and self.micro_tokens > 0
        # A row is long when even padded it is over the cap padded to the bucket: one sequence longer than the cap.
        self.long_over = -(-self.micro_tokens // self.bucket) * self.bucket if self.bucket else self.micro_tokens
        self._checkpointing = False  # read by the wrapped decoder layers while a long row runs (or is captured)
        self._wrapped = checkpoint_layers(model, lambda: self._checkpointing) if self.checkpoint_long else []
        self._flags = UnslothFlags(model, return_logits=self.mode == "graphs" and self.loss == "model") \
            if self.backend == "unsloth" and self.attention == "mask" else None
        # peft's LoRA forward casts each layer's input to the LoRA weights' dtype (fp32) and the matmul under
        # autocast casts it back to bf16: an exact round trip, two passes over the input per projection. Under
        # autocast the steps skip it (peft.helpers.disable_input_dtype_casting); pause() restores it.
        self._no_cast = contextlib.ExitStack() if self.backend == "peft" and self.autocast_dtype else None

    def begin(self, cfg) -> None:
        """Start a variant: LoRA weights back at their start, AdamW state and grads zero, in place."""
        import torch

        with torch.no_grad():
            torch._foreach_copy_(self.params, self.start)
            for state in self.opt.state.values():
                for t in state.values():
                    t.zero_()
        self.zero_grads()
        if cfg.weight_decay != self.weight_decay:  # a float captured into the end graph: capture it again
            for g in self.opt.param_groups:
                g["weight_decay"] = cfg.weight_decay if g["decay"] else 0.0
            self.weight_decay, self.end_graph = cfg.weight_decay, None
        self.variants += 1
        if self._flags:  # Unsloth keeps the block-diagonal masks while training; pause() gives its settings back
            self._flags.keep()
        if self._no_cast is not None:
            from peft.helpers import disable_input_dtype_casting

            self._no_cast.close()
            self._no_cast.enter_context(disable_input_dtype_casting(self.model))

    def zero_grads(self) -> None:
        """Grads to zero in place (graphs accumulate into them where they are)."""
        import torch

        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)

    def pause(self) -> None:
        """Training is over for now (probes and sampling next): Unsloth's own settings (and peft's casts) back."""
        if self._flags:
            self._flags.restore()
        if self._no_cast is not None:
            self._no_cast.close()

    def forward_backward(self, ids, positions, labels, segments, n_items, lengths=None):
        """One row's loss (divided by the step's target count) backward into .grad; returns the loss."""
        import torch

        # The seed plan trains under the Trainer's bf16 autocast; the weight-cast cache must stay off
        # inside a CUDA graph (its cached copies would be freed at capture's end).
        self._checkpointing = self.checkpoint_long and ids.shape[-1] > self.long_over
        try:
            with torch.autocast(ids.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None, cache_enabled=False):
                loss = self._loss(ids, positions, labels, segments, n_items, lengths)
            loss.backward()
        finally:
            self._checkpointing = False
        return loss.detach()

    def _loss(self, ids, positions, labels, segments, n_items, lengths=None):
        """One row's summed target loss over n_items: the chunked loss over hidden states, or the model's own."""
        kw = self._row_kwargs(ids, positions, labels, segments, n_items, lengths)
        if self.loss == "model":
            return self.model(**kw).loss
        attention = {k: kw[k] for k in ("attention_mask", "packed_seq_lengths") if k in kw}
        hidden, head = chunked_loss.final_hidden(self.model, ids, positions, **attention)
        return chunked_loss.chunked_row_losses(hidden, head, labels, 1.0 / n_items.float().view(1)).sum()

    def _row_kwargs(self, ids, positions, labels, segments, n_items, lengths=None) -> dict:
        """The model's inputs for one packed row."""
        # No KV cache in training: a checkpointed layer's recompute would append to it a second time.
        kw = {"input_ids": ids, "position_ids": positions, "labels": labels, "num_items_in_batch": n_items,
              "use_cache": False}
        if self.attention == "varlen":
            kw["packed_seq_lengths"] = lengths  # a CPU int32 tensor: Unsloth stages it without a sync
        else:
            additive = self.autocast_dtype if self.backend == "unsloth" else None  # Unsloth wants 0/-inf
            kw["attention_mask"] = block_causal_mask(segments, additive or None)
        return kw

    def forward_loss(self, ids, positions, labels, segments, n_items, lengths=None):
        """One row's loss (divided by n_items), forward only: a probe, in the training row layout."""
        import torch

        with torch.no_grad(), torch.autocast(ids.device.type, dtype=self.autocast_dtype or torch.float32,
                                             enabled=self.autocast_dtype is not None, cache_enabled=False):
            return self._loss(ids, positions, labels, segments, n_items, lengths).detach()

    def capture_probes(self, rows: list[tuple], n_items) -> int:
        """Graph mode: a forward-only graph per probe row length not captured yet (a capture that fails leaves probes
        eager, and plan_reason says why); returns how many were captured."""
        import torch

        todo = {r[0].shape[-1]: (*r[:4], n_items) for r in rows if r[0].shape[-1] not in self.probe_graphs}
        if self.mode != "graphs" or self.probe_eager or not todo:
            return 0
        try:
            self.probe_graphs.update(record_graphs(self.forward_loss, todo, self.pool))
        except Exception as exc:  # noqa: BLE001  (the rows still get measured, eagerly)
            self.probe_eager = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            torch.cuda.synchronize()
            return 0
        return len(todo)

    def probe(self, rows: list[tuple], n_items, total) -> None:
        """A probe set's token-weighted mean loss added into `total` (a 1-element device tensor), no host sync:
        its packed rows forward only, each divided by the set's target count. Graph mode replays one
        forward-only graph per row length (captured on first use)."""
        self.capture_probes(rows, n_items)
        for inputs in rows:
            entry = self.probe_graphs.get(inputs[0].shape[-1])
            total.add_(replay(entry, (*inputs[:4], n_items)) if entry
                       else self.forward_loss(*inputs[:4], n_items, *inputs[4:]))

    def end_step(self) -> None:
        """Clip, AdamW, zero grads: the same code eager or under capture."""
        import torch

        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM, foreach=True)
        self.opt.step()
        torch._foreach_zero_([p.grad for p in self.params if p.grad is not None])

    def capture(self, examples: dict[int, tuple]) -> int:
        """Graphs for the row lengths not captured yet (examples: length -> one row's inputs); returns how many."""
        todo = {t: x for t, x in examples.items() if t not in self.graphs}
        if self.mode != "graphs" or (not todo and self.end_graph is not None):
            return 0
        # The warm-up forward/backward also makes every .grad, so captures accumulate in place.
        self.graphs.update(record_graphs(self.forward_backward, {t: x[:5] for t, x in todo.items()}, self.pool))
        if self.end_graph is None:
            self.end_graph = graph_of(self.end_step, self.pool)
        return len(todo)

    def step(self, rows: list[tuple], n_items, lr: float, loss_out) -> None:
        """One optimizer step over its rows; the loss lands in loss_out (a 1-element device view), no host sync."""
        set_lr(self.opt, lr)
        loss_out.zero_()
        for inputs in rows:
            if self.mode == "eager":
                loss_out.add_(self.forward_backward(*inputs[:4], n_items, *inputs[4:]))
                continue
            loss_out.add_(replay(self.graphs[inputs[0].shape[-1]], (*inputs[:4], n_items)))
        if self.mode == "eager":
            self.end_step()
        else:
            self.end_graph.replay()

    def close(self) -> None:
        """Free the graphs and their pool and undo the Unsloth settings (the model stays usable)."""
        import torch

        self.pause()
        self.graphs.clear()
        self.probe_graphs.clear()
        self.end_graph = None
        uncheckpoint_layers(self._wrapped)
        self._wrapped = []
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
