"""The fast plan's step math, free of execution: which sequences each optimizer step holds, how they are
tokenised, packed into padding-free rows and cut into micro-batches, and the lr each step uses.

Everything here reproduces what TRL's SFTTrainer does in the seed plan (harness.train.fast.engine runs it):
the same sequences in each optimizer step (accelerate's seedable sampler, `data_seed + epoch`, and
transformers' epoch chunking: `seed_plan_batches`), the same tokenisation (text + EOS, the tokenizer's own
special tokens, cut at max_length as TRL cuts), the same lr schedule (`transformers.get_scheduler`), and the
loss normalised over the step's real target tokens (transformers' `num_items_in_batch`), however the step's
sequences are cut into micro-batches (`split_step`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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
    """A micro-batch's sequences as one row (plus a masked pad segment when bucketed)."""

    ids: list[int]
    positions: list[int]
    labels: list[int]  # -100 at each sequence start: after the model's shift, no target crosses a boundary
    segments: list[int]  # segment id per token (the pad segment has its own id)
    lengths: list[int]  # segment lengths, pad segment included
    n_items: int  # real target tokens: sum(len - 1), as transformers counts labels[..., 1:] != -100


def pack_step(seqs: list[list[int]], pad_id: int, bucket: int = 0) -> PackedRow:
    """Concatenate sequences into one row; with bucket > 0 pad the row up to a multiple of it."""
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


def split_step(seqs: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Indices of a step's sequences per micro-batch, each micro-batch at most max_tokens (0: one micro-batch).

    First-fit decreasing, so micro-batches come out nearly full and few; a sequence longer than max_tokens
    is a micro-batch of its own. The split changes only summation order: each micro-batch's loss is
    divided by the whole step's target count, and their gradients add up in .grad.
    """
    if max_tokens <= 0 or sum(map(len, seqs)) <= max_tokens:
        return [list(range(len(seqs)))]
    chunks: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(seqs)), key=lambda k: (-len(seqs[k]), k)):
        n = len(seqs[i])
        at = next((c for c, free in enumerate(room) if n <= free), None)
        if at is None:
            chunks.append([i])
            room.append(max_tokens - n)
        else:
            chunks[at].append(i)
            room[at] -= n
    return [sorted(c) for c in chunks]


def block_causal_mask(segments, additive_dtype=None):
    """[R, 1, T, T] mask from segment ids [R, T] (R rows, each packed): bool keep-mask, or 0/-inf additive in
    additive_dtype."""
    import torch

    t = segments.shape[-1]
    r = segments.numel() // t
    keep = (segments.view(r, t, 1) == segments.view(r, 1, t)) & torch.ones(t, t, dtype=torch.bool,
                                                                              device=segments.device).tril_()
    keep = keep.view(r, 1, t, t)
    if additive_dtype is None:
        return keep
    zero = torch.zeros((), dtype=additive_dtype, device=segments.device)
    return torch.where(keep, zero, torch.finfo(additive_dtype).min)


