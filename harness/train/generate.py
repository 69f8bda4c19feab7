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
    import torch

    device = next(model.parameters()).device
    prompt_ids = tokenizer(gcfg.prompt, add_special_tokens=True, return_tensors="pt")["input_ids"]
    if prompt_ids.shape[1] == 0:
        raise ValueError("generate.prompt encodes to zero tokens; use a start token such as '\\n'")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    samples: list[Sample] = []
    new_tokens_total, seconds = 0, 0.0
    torch.manual_seed(gcfg.seed)
    for start in range(0, gcfg.n_samples, gcfg.batch_size):
        n = min(gcfg.batch_size, gcfg.n_samples - start)
        ids = prompt_ids.repeat(n, 1).to(device)
        kwargs = dict(max_new_tokens=gcfg.max_new_tokens, do_sample=gcfg.temperature > 0, use_cache=True,
                      eos_token_id=eos, pad_token_id=pad, repetition_penalty=gcfg.repetition_penalty)
        if gcfg.temperature > 0:
            kwargs.update(temperature=gcfg.temperature, top_p=gcfg.top_p, top_k=gcfg.top_k or None,
                          min_p=gcfg.min_p or None)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        seconds += time.perf_counter() - t0
        for row in out[:, ids.shape[1]:].tolist():
            hit_eos = eos in row
            body = row[: row.index(eos)] if hit_eos else row
            body = [t for t in body if t != pad]
            new_tokens_total += len(body) + (1 if hit_eos else 0)
            text = clean_sample(tokenizer.decode(body, skip_special_tokens=True))
            samples.append(Sample(len(samples), text, len(body), not hit_eos))
        if progress:
            progress(len(samples))
    stats = GenerationStats(n=len(samples), seconds=round(seconds, 3), new_tokens=new_tokens_total,
                            tokens_per_s=round(new_tokens_total / max(seconds, 1e-9), 2),
                            cut_off=sum(s.cut_off for s in samples), settings=asdict(gcfg))
    return samples, stats
