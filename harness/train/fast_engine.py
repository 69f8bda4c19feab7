"""How the fast plan executes optimizer steps: packed rows, fused AdamW, eager or CUDA graphs (see harness.train.fast).

    run = FastRun(model, tokenizer, texts, cfg.train, max_length=2048)   # rows on the device, optimizer made
    run.warm_up(); run.run(run.total); losses = run.losses(); run.close()

What is kept from the seed plan (TRL SFTTrainer, batch_size x grad_accum): the same sequences in each
optimizer step (accelerate's seedable sampler, `data_seed + epoch`, and transformers' epoch chunking,
reproduced by `seed_plan_batches`), the same tokenisation (text + EOS, the tokenizer's own special
tokens, cut at max_length as TRL cuts), the same lr schedule (`transformers.get_scheduler`), AdamW
betas/eps and weight-decay groups, grad clipping at 1.0 and the loss normalised over the step's real
target tokens (transformers' `num_items_in_batch`).

mode="graphs": the whole step (zero grads, forward, backward, clip, AdamW) is captured once per length
bucket (rows padded to a multiple of `bucket` tokens with a masked extra segment whose labels are -100)
and replayed; no compiler, so warm-up is one eager fwd/bwd plus one capture per bucket. Attention for a
packed row: "mask" (a 4D block-diagonal mask built on the device: no host data, so it can live inside a
graph) or "varlen" (Unsloth only: host-side lengths per step, so eager only).
"""
from __future__ import annotations

import gc
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_GRAD_NORM = 1.0  # TrainingArguments' default, which the seed plan (harness.train.sft.sft_config) keeps
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # TrainingArguments' defaults, the same for the 8-bit AdamW
# transformers' Trainer.get_decay_parameter_names: no weight decay on biases and norm weights.
NO_DECAY = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def seed_plan_batches(n_examples: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int,
                      data_seed: int) -> list[list[list[int]]]:
    """Example indices per optimizer step, per micro-batch, in the order SFTTrainer trains them.

    accelerate's SeedableRandomSampler reseeds a CPU generator with data_seed + epoch and draws one
    randperm per epoch; transformers cuts each epoch's batches into groups of grad_accum, the last group
    of an epoch taking the remainder; max_steps (> 0) or ceil(epochs x steps per epoch) ends training.
    """
    import torch

    batches_per_epoch = math.ceil(n_examples / batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum)
    total = max_steps if max_steps > 0 else max(1, math.ceil(epochs * steps_per_epoch))
    plan: list[list[list[int]]] = []
    epoch = 0
    while len(plan) < total:
        gen = torch.Generator().manual_seed(data_seed + epoch)
        order = torch.randperm(n_examples, generator=gen).tolist()
        batches = [order[i:i + batch_size] for i in range(0, n_examples, batch_size)]
        for s in range(0, len(batches), grad_accum):
            if len(plan) == total:
                break
            plan.append(batches[s:s + grad_accum])
        epoch += 1
    return plan


def tokenize_like_sft(tokenizer, texts: list[str], max_length: int | None = None) -> list[list[int]]:
    """Token ids as SFTTrainer makes them for a text dataset: EOS appended if missing, special tokens on,
    then cut to the first max_length tokens (TRL truncates; the harness refuses such pieces up front)."""
    eos = tokenizer.eos_token
    ids = [tokenizer(t if t.endswith(eos) else t + eos)["input_ids"] for t in texts]
    return [x[:max_length] for x in ids] if max_length else ids


def lr_schedule(cfg, total_steps: int) -> list[float]:
    """The lr each optimizer step uses, from transformers' own scheduler (step k uses lambda(k))."""
    import torch
    from transformers import get_scheduler

    warmup = cfg.warmup_steps
    warmup = math.ceil(warmup * total_steps) if isinstance(warmup, float) and warmup < 1 else int(warmup)
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = get_scheduler(cfg.scheduler, dummy, num_warmup_steps=warmup, num_training_steps=total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(dummy.param_groups[0]["lr"])
        dummy.step()
        sched.step()
    return lrs


@dataclass
class PackedRow:
    """One optimizer step's sequences as one row (plus a masked pad segment when bucketed)."""

    ids: list[int]
    positions: list[int]
    labels: list[int]  # -100 at each sequence start: after the model's shift, no target crosses a boundary
    segments: list[int]  # segment id per token (the pad segment has its own id)
    lengths: list[int]  # segment lengths, pad segment included
    n_items: int  # real target tokens: sum(len - 1), as transformers counts labels[..., 1:] != -100


def pack_step(seqs: list[list[int]], pad_id: int, bucket: int = 0) -> PackedRow:
    """Concatenate a step's sequences; with bucket > 0 pad the row up to a multiple of it."""
    row = PackedRow([], [], [], [], [], 0)
    for k, s in enumerate(seqs):
        row.ids += s
        row.positions += range(len(s))
        row.labels += [-100] + s[1:]
        row.segments += [k] * len(s)
        row.lengths.append(len(s))
        row.n_items += len(s) - 1
    pad = (-len(row.ids)) % bucket if bucket else 0
    if pad:
        row.ids += [pad_id] * pad
        row.positions += range(pad)
        row.labels += [-100] * pad
        row.segments += [len(seqs)] * pad
        row.lengths.append(pad)
    return row


def block_causal_mask(segments, additive_dtype=None):
    """[1, 1, T, T] mask from segment ids: bool keep-mask, or 0/-inf additive in additive_dtype."""
    import torch

    t = segments.shape[-1]
    keep = (segments.view(t, 1) == segments.view(1, t)) & torch.ones(t, t, dtype=torch.bool,
                                                                        device=segments.device).tril_()
    keep = keep.view(1, 1, t, t)
    if additive_dtype is None:
        return keep
    zero = torch.zeros((), dtype=additive_dtype, device=segments.device)
    return torch.where(keep, zero, torch.finfo(additive_dtype).min)


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
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=cuda, capturable=capturable)
    if capturable:  # state made outside any capture, as AdamW would make it on its first step
        for g in opt.param_groups:
            g["lr"] = lr
            for p in g["params"]:
                opt.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
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


@dataclass
class FastStats:
    """What the fast plan did and how long it took."""

    mode: str  # "eager" or "graphs"
    device: str  # "cuda" or "cpu"
    attention: str  # "mask" or "varlen"
    backend: str
    steps: int
    real_tokens: int  # tokens in the packed rows before bucket padding
    padded_tokens: int  # tokens computed (bucket padding included)
    train_seconds: float  # optimizer steps only, synchronized at both ends of every segment
    warmup_seconds: float  # warm-up forward/backward and graph captures
    tokens_per_s: float
    step_ms: list[float] = field(default_factory=list)  # per step, from CUDA events (device time)
    buckets: list[int] = field(default_factory=list)
    peak_reserved_bytes: int = 0
    optimizer: str = "torch AdamW (fused)"


class _Step:
    """Forward + backward + clip + AdamW for one packed row, the same code eager or under capture."""

    def __init__(self, model, opt, backend: str, attention: str, autocast_dtype):
        self.model, self.opt, self.backend, self.attention = model, opt, backend, attention
        self.params = [p for g in opt.param_groups for p in g["params"]]
        self.autocast_dtype = autocast_dtype

    def forward_backward(self, ids, positions, labels, segments, n_items, lengths=None):
        import torch

        kw = {"input_ids": ids, "position_ids": positions, "labels": labels, "num_items_in_batch": n_items}
        if self.attention == "varlen":
            kw["packed_seq_lengths"] = lengths  # a CPU int32 tensor: Unsloth stages it without a sync
        else:
            additive = self.autocast_dtype if self.backend == "unsloth" else None  # Unsloth wants 0/-inf
            kw["attention_mask"] = block_causal_mask(segments, additive or None)
        # The seed plan trains under the Trainer's bf16 autocast; the weight-cast cache must stay off
        # inside a CUDA graph (its cached copies would be freed at capture's end).
        with torch.autocast(ids.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            loss = self.model(**kw).loss
        loss.backward()
        return loss.detach()

    def full(self, *inputs):
        import torch

        torch._foreach_zero_([p.grad for p in self.params if p.grad is not None])
        loss = self.forward_backward(*inputs)
        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM, foreach=True)
        self.opt.step()
        return loss


def backend_of(model) -> str:
    """The backend in use: one per process (Unsloth patches transformers globally), so imported means in use."""
    return "unsloth" if "unsloth" in sys.modules else "peft"


class FastRun:
    """One variant's fast-plan training: rows packed and on the device, optimizer made, steps run in segments."""

    def __init__(self, model, tokenizer, texts: list[str], cfg, *, mode: str = "auto", attention: str = "auto",
                 max_length: int | None = 2048, bucket: int = 512, limit: int = 0):
        """mode "auto" = graphs on CUDA, eager on CPU; limit > 0 runs only the first limit steps (same schedule)."""
        import torch

        self.model, self.cuda = model, next(model.parameters()).is_cuda
        self.backend = backend_of(model)
        self.mode = ("graphs" if self.cuda else "eager") if mode == "auto" else mode
        if self.mode == "graphs" and not self.cuda:
            raise ValueError("mode='graphs' needs a CUDA device")
        self.attention = ("varlen" if self.backend == "unsloth" and self.mode == "eager" and self.cuda else "mask") \
            if attention == "auto" else attention
        if self.mode == "graphs" and self.attention == "varlen":
            raise ValueError("attention='varlen' reads host lengths every step; graphs need attention='mask'")
        self._restore: list[tuple[object, str, object]] = []
        self._env = os.environ.get("UNSLOTH_RETURN_LOGITS")
        if self.backend == "unsloth" and self.attention == "mask":
            # Unsloth drops attention masks in training (it assumes right padding) unless told to keep them;
            # a block-diagonal mask is what keeps packed sequences apart.
            for m in model.modules():
                if hasattr(m, "layers") and hasattr(m, "embed_tokens"):
                    for name in ("_unsloth_keep_padding_mask", "_unsloth_allow_packed_overlength"):
                        self._restore.append((m, name, getattr(m, name, None)))
                        setattr(m, name, True)  # the second: else rows over max_seq_length are cut
            if self.mode == "graphs":
                os.environ["UNSLOTH_RETURN_LOGITS"] = "1"  # plain Triton CE instead of the chunked compiled one
        device = next(model.parameters()).device
        frozen = next((p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()),
                      torch.float32)
        self.autocast_dtype = frozen if self.cuda and frozen in (torch.bfloat16, torch.float16) else None

        self.seqs = tokenize_like_sft(tokenizer, texts, max_length)
        full = seed_plan_batches(len(self.seqs), cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps, cfg.seed)
        self.lrs = lr_schedule(cfg, len(full))  # the whole run's schedule, also when limit cuts it short
        self.plan = full[:limit] if limit > 0 else full
        self.total, self.planned = len(self.plan), len(full)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.rows = [pack_step([self.seqs[i] for mb in step for i in mb], pad_id,
                               bucket if self.mode == "graphs" else 0) for step in self.plan]

        # Every step's inputs go to the device once, up front: per step only views (eager) or a D2D copy.
        def dev(name, dtype=torch.long):
            return [torch.tensor(getattr(r, name), dtype=dtype).view(1, -1).to(device, non_blocking=True)
                    for r in self.rows]
        self.ids, self.pos, self.labels, self.segs = dev("ids"), dev("positions"), dev("labels"), dev("segments")
        self.n_items = torch.tensor([r.n_items for r in self.rows], dtype=torch.long).to(device)
        self.host_lengths = [torch.tensor(r.lengths, dtype=torch.int32) for r in self.rows]
        model.train()
        self.opt = make_optimizer(model, cfg, capturable=(self.mode == "graphs"))
        self.step = _Step(model, self.opt, self.backend, self.attention, self.autocast_dtype)
        self.loss_dev = torch.zeros(self.total, dtype=torch.float32, device=device)
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(2 * self.total)] if self.cuda else []
        self.graphs: dict[int, tuple] = {}
        self.done, self.train_s, self.warmup_s = 0, 0.0, 0.0

    def _inputs(self, i: int) -> tuple:
        return self.ids[i], self.pos[i], self.labels[i], self.segs[i], self.n_items[i], self.host_lengths[i]

    def _sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def warm_up(self) -> float:
        """Kernels' autotuning and first-call compiles, one capture per bucket in graph mode; weights unchanged."""
        import torch

        self._sync()
        t0 = time.perf_counter()
        if self.mode == "eager":
            self.step.forward_backward(*self._inputs(0))
        else:
            pool = torch.cuda.graph_pool_handle()
            # Largest bucket first: later, smaller captures reuse its blocks in the shared pool (the graphs
            # replay one at a time on one stream, so sharing is safe), and its warm-up sizes the cache.
            first: dict[int, int] = {}
            for i, r in enumerate(self.rows):
                first.setdefault(len(r.ids), i)
            for t, i in sorted(first.items(), reverse=True):
                static = tuple(x.clone() for x in self._inputs(i)[:5])
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self.step.forward_backward(*static)  # also makes every .grad, so captures accumulate in place
                torch.cuda.current_stream().wait_stream(side)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool):
                    out = self.step.full(*static)
                self.graphs[t] = (g, static, out)
        self._sync()
        self.warmup_s += time.perf_counter() - t0
        return self.warmup_s

    def run(self, stop: int, on_step: Callable[[int, int], None] | None = None) -> float:
        """Steps done..stop-1, synchronized at both ends; returns this segment's seconds."""
        stop = min(stop, self.total)
        self._sync()
        t0 = time.perf_counter()
        for i in range(self.done, stop):
            set_lr(self.opt, self.lrs[i])
            if self.events:
                self.events[2 * i].record()
            if self.mode == "eager":
                self.loss_dev[i] = self.step.full(*self._inputs(i))
            else:
                g, static, out = self.graphs[self.ids[i].shape[-1]]
                for dst, src in zip(static, self._inputs(i)[:5]):
                    dst.copy_(src, non_blocking=True)
                g.replay()
                self.loss_dev[i] = out
            if self.events:
                self.events[2 * i + 1].record()
            if on_step:  # no sync: the caller's progress line runs ahead of the device by a few steps
                on_step(i + 1, self.total)
        self._sync()
        seconds = time.perf_counter() - t0
        self.done = max(self.done, stop)
        self.train_s += seconds
        return seconds

    def losses(self) -> list[float]:
        """Per-step training losses of the steps done (one host read)."""
        return self.loss_dev[: self.done].tolist()

    def real_tokens(self) -> int:
        """Real tokens of the steps done (bucket padding excluded), as num_input_tokens_seen counts them."""
        return sum(len(self.seqs[j]) for s in self.plan[: self.done] for mb in s for j in mb)

    def stats(self) -> FastStats:
        """Timings, tokens, buckets and peak memory so far."""
        import torch

        real = self.real_tokens()
        step_ms = [round(self.events[2 * i].elapsed_time(self.events[2 * i + 1]), 3)
                   for i in range(self.done)] if self.events else []
        return FastStats(mode=self.mode, device="cuda" if self.cuda else "cpu", attention=self.attention,
                         backend=self.backend, steps=self.done,
                         real_tokens=real, padded_tokens=sum(len(r.ids) for r in self.rows[: self.done]),
                         train_seconds=round(self.train_s, 4), warmup_seconds=round(self.warmup_s, 3),
                         tokens_per_s=round(real / max(self.train_s, 1e-9), 1), step_ms=step_ms,
                         buckets=sorted(self.graphs),
                         peak_reserved_bytes=int(torch.cuda.max_memory_reserved()) if self.cuda else 0,
                         optimizer="torch AdamW (fused" + (", capturable)" if self.mode == "graphs" else ")")
                         if self.cuda else "torch AdamW")

    def close(self) -> None:
        """Free the graphs and their pool, and undo the Unsloth flags, before sampling uses the model."""
        import torch

        self.graphs.clear()
        for m, name, previous in self._restore:
            if previous is None:
                m.__dict__.pop(name, None)
            else:
                setattr(m, name, previous)
        self._restore.clear()
        if self.mode == "graphs":
            if self._env is None:
                os.environ.pop("UNSLOTH_RETURN_LOGITS", None)
            else:
                os.environ["UNSLOTH_RETURN_LOGITS"] = self._env
        self.ids = self.pos = self.labels = self.segs = []
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
