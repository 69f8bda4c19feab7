"""Sample art from a model: seeded, batched with the KV cache, stopping at EOS or max_new_tokens.

Generation starts from `generate.prompt` (default "\\n", the training texts' first token):
SmolLM2's tokenizer adds no BOS, so an empty prompt would encode to nothing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from harness.config import GenerateConfig
from harness.results import GenerationStats


@dataclass
class Sample:
    """One generated piece and how it ended."""

    index: int
    text: str
    new_tokens: int
    cut_off: bool  # hit max_new_tokens before EOS


def clean_sample(text: str) -> str:
    """Strip the start newline and trailing blank lines; keep interior whitespace exactly."""
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))


def generate_samples(model, tokenizer, gcfg: GenerateConfig, progress=None) -> tuple[list[Sample], GenerationStats]:
    """Draw gcfg.n_samples pieces in batches; returns samples and timing stats."""
    return generate_copies(model, tokenizer, gcfg, 1, progress)[0]


def generate_copies(model, tokenizer, gcfg: GenerateConfig, copies: int,
                    progress=None) -> list[tuple[list[Sample], GenerationStats]]:
    """gcfg.n_samples pieces for each of `copies` row blocks in the same generate calls: each call's rows are
    copies blocks of the batch's rows, block c for copy c (the multi-adapter engine runs block c with adapter
    c: harness.train.multi.plan). One seed for all, so with copies=1 the draws are generate_samples' own."""
    import torch

    device = next(model.parameters()).device
    prompt_ids = tokenizer(gcfg.prompt, add_special_tokens=True, return_tensors="pt")["input_ids"]
    if prompt_ids.shape[1] == 0:
        raise ValueError("generate.prompt encodes to zero tokens; use a start token such as '\\n'")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    samples: list[list[Sample]] = [[] for _ in range(copies)]
    new_tokens = [0] * copies
    seconds = 0.0
    torch.manual_seed(gcfg.seed)
    for start in range(0, gcfg.n_samples, gcfg.batch_size):
        n = min(gcfg.batch_size, gcfg.n_samples - start)
        ids = prompt_ids.repeat(n * copies, 1).to(device)
        kwargs = dict(max_new_tokens=gcfg.max_new_tokens, do_sample=gcfg.temperature > 0, use_cache=True,
                      eos_token_id=eos, pad_token_id=pad, repetition_penalty=gcfg.repetition_penalty)
        if gcfg.temperature > 0:
            kwargs.update(temperature=gcfg.temperature, top_p=gcfg.top_p, top_k=gcfg.top_k or None,
                          min_p=gcfg.min_p or None)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        seconds += time.perf_counter() - t0
        for r, row in enumerate(out[:, ids.shape[1]:].tolist()):
            c = r // n
            hit_eos = eos in row
            body = row[: row.index(eos)] if hit_eos else row
            body = [t for t in body if t != pad]
            new_tokens[c] += len(body) + (1 if hit_eos else 0)
            text = clean_sample(tokenizer.decode(body, skip_special_tokens=True))
            samples[c].append(Sample(len(samples[c]), text, len(body), not hit_eos))
        if progress:
            progress(len(samples[0]))
    return [(mine, GenerationStats(n=len(mine), seconds=round(seconds, 3), new_tokens=tokens,
                                   tokens_per_s=round(tokens / max(seconds, 1e-9), 2),
                                   cut_off=sum(s.cut_off for s in mine), settings=asdict(gcfg), shared_with=copies))
            for mine, tokens in zip(samples, new_tokens)]
