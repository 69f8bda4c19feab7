"""K fast-plan variants over one base, trained and probed together: the variant-level face of the multi-adapter
engine, as harness.train.fast.plan is the solo plan's.

    engine = MultiEngine(model, k)                                           # harness.train.multi.engine
    trained = train_variants(model, tok, datasets, cfgs, engine)             # [(LossCurves, TrainStats)]
    engine.stack.uninstall(); engine.stack.export(k); model.save_pretrained(...)   # each adapter, as PEFT saves it
    sampled, how = sample_variants(model, tok, engine, [c.generate for c in cfgs])  # harness.train.multi.sample
    engine.close()

Each variant's curves and stats are what train_variant_fast would give it alone (tests/test_multi_engine.py):
its own eval steps (variants with different step counts probe at different global steps; a probe pass runs
the K adapters' probe rows together and keeps the rows of the variants due), its own per-step losses. What
the K variants share, seconds and peak memory, is stated as shared (TrainStats.engine, Timing.shared).

A sweep larger than one engine group (`group_sizes`) trains group after group in the same process: each
group's results are written when it completes, so a run stopped early keeps its finished groups.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from harness.config import RunConfig
from harness.data import Dataset, check_lengths, format_example, token_lengths
from harness.results import LossCurves, TrainStats
from harness.train.fast import plan as fast
from harness.train.fast.run import FastStats
from harness.train.keep import Keeper
from harness.train.multi.engine import MultiEngine
from harness.train.multi.run import MultiRun
from harness.train.sft import _peak_memory, eval_steps, make_probes, total_steps

# Adapters per engine: each holds its LoRA weights, grads and AdamW state in fp32 (16 bytes per LoRA parameter,
# ~0.4 GB for Llama-3.2-3B at r=16), and a micro-batch's rows grow with K down to the row cap's floor.
MAX_ADAPTERS = 32
# Adapters per engine group: results are written group by group, so a sweep stopped at a cap keeps its finished
# groups; and per variant K = 8 trained its steps no slower than K = 32 did in one engine
# (reports/gpu-bench/multi-adapter-h200/sweep-8.json and sweep-32.json, read in reports/gpu-bench/README.md).
GROUP_ADAPTERS = 8
GROUP_ENV = "ASCIITUNE_MULTI_GROUP"  # variants per engine group instead of GROUP_ADAPTERS (1..MAX_ADAPTERS; 1: solo)


def refusal(cfgs: list[RunConfig]) -> str | None:
    """Why these variants cannot train in one multi-adapter engine (one sentence), or None when they can."""
    if len(cfgs) < 2:
        return "a single variant trains solo"
    if len(cfgs) > MAX_ADAPTERS:
        return f"{len(cfgs)} variants are more than one engine's {MAX_ADAPTERS} adapters"
    if any(c.train.plan != "fast" for c in cfgs):
        return "only fast-plan variants share the engine"
    first = cfgs[0].to_dict()
    if any(json.dumps([c.to_dict()["model"], c.to_dict()["lora"]], sort_keys=True)
           != json.dumps([first["model"], first["lora"]], sort_keys=True) for c in cfgs):
        return "the variants differ in their model or lora settings (base, rank, alpha, targets)"
    lora = cfgs[0].lora
    if lora.dropout > 0:
        return f"lora.dropout={lora.dropout:g} (each adapter's dropout mask would need its own random stream)"
    if lora.bias != "none":
        return f"lora.bias={lora.bias} trains the base's biases, which one base cannot hold K of"
    for c in cfgs:
        if why := fast.refusal(c):
            return why
    return None


def group_sizes(n: int, per_group: int | None = None) -> list[int]:
    """How n variants over one base split into engine groups trained one after another: as few groups as
    per_group (default: $ASCIITUNE_MULTI_GROUP, which the executor sets from its memory plan, else GROUP_ADAPTERS)
    allows, as even as possible (9 -> [5, 4], 32 -> [8, 8, 8, 8]; per_group 1: each variant alone)."""
    per_group = per_group or int(os.environ.get(GROUP_ENV) or GROUP_ADAPTERS)
    per_group = min(max(per_group, 1), MAX_ADAPTERS)
    groups = max(1, -(-n // per_group))
    return [n // groups + (1 if i < n % groups else 0) for i in range(groups)]


def plan_reason(k: int, stats: FastStats) -> str:
    """How the multi-adapter engine executed, for TrainStats.plan_reason."""
    how = ("CUDA graphs per row length" if stats.mode == "graphs" else
           "eager on CPU (CUDA graphs need a GPU)" if stats.device == "cpu" else "eager")
    rows = (f"each variant's steps in packed rows of <= {stats.micro_tokens} tokens, batched [{k}, T]"
            if stats.micro_tokens else f"each variant's step in one packed row, batched [{k}, T]")
    ckpt = (f"checkpointing only in the {stats.checkpointed_rows} micro-batches of a sequence longer than the cap"
            if stats.checkpointed_rows else "checkpointing off")
    probes = "probes as forward-only CUDA graphs" if stats.probes == "graphs" else f"probes {stats.probes}"
    return (f"multi-adapter engine, K={k}: one forward/backward per micro-batch for all {k} variants (seconds and "
            f"memory shared); {how}; {rows}; per-adapter clipping and AdamW; {ckpt}; {probes}; loss chunked over "
            "the final hidden states, each row over its own variant's target count")


def train_variants(model, tokenizer, datasets: list[Dataset], cfgs: list[RunConfig], engine: MultiEngine, *,
                   on_eval: Callable[[int, int, float, float], None] | None = None,
                   on_step: Callable[[int, int], None] | None = None,
                   limit: int = 0) -> tuple[list[tuple[LossCurves, TrainStats]], MultiRun]:
    """Train the K variants together; per variant its curves and stats as train_variant_fast reports them, and
    the MultiRun (for its engine-level stats). on_eval(k, step, train loss, held-out loss) as each lands."""
    import torch

    if why := refusal(cfgs):
        raise ValueError(why)
    k = len(cfgs)
    probes, texts = [], []
    for ds, cfg in zip(datasets, cfgs):
        check_lengths(ds.train, token_lengths(ds.train, tokenizer), cfg.model.max_seq_length)
        probes.append(make_probes(ds, cfg, tokenizer.eos_token))
        texts.append([format_example(p.text, tokenizer.eos_token) for p in ds.train])
    t_start = time.perf_counter()
    run = MultiRun(engine, tokenizer, [(t, c.train) for t, c in zip(texts, cfgs)],
                   max_length=cfgs[0].model.max_seq_length, limit=limit)
    totals = [total_steps(len(t), c) for t, c in zip(texts, cfgs)]
    points = [[s for s in eval_steps(tot, c.train.eval_points) if s <= (limit or tot)] + [run.totals[j]]
              for j, (tot, c) in enumerate(zip(totals, cfgs))]
    per_epoch = [-(-len(t) // c.train.batch_size) for t, c in zip(texts, cfgs)]
    micro = []
    for plan in run.plans:
        m = [0]
        for step in plan:
            m.append(m[-1] + len(step))
        micro.append(m)
    batches = run.probe_batches(tokenizer, [[p.train for p in probes], [p.heldout for p in probes]])
    curves = [LossCurves() for _ in range(k)]
    eval_s = [0.0]

    # train.keep and train.stop_on per variant (harness.train.keep), each following its own row of the stack
    keepers = [Keeper(None, c.train, params=[(f"adapter {j}", engine.stack.row(j))]) for j, c in enumerate(cfgs)]

    def measure(step: int) -> None:
        due = [j for j in range(k) if step in points[j] and step <= run.totals[j] and step not in curves[j].steps]
        if not due:
            return
        t0 = time.perf_counter()
        sums = torch.zeros(2, k, dtype=torch.float32, device=run.device)
        engine.probe(batches, sums)
        tr, ho = sums.tolist()
        eval_s[0] += time.perf_counter() - t0
        for j in due:
            c = curves[j]
            c.steps.append(step)
            c.epochs.append(round(micro[j][step] / per_epoch[j], 4))
            c.train_loss.append(tr[j])
            c.heldout_loss.append(ho[j])
            if on_eval:
                on_eval(j, step, tr[j], ho[j])
            if keepers[j].observe(c) and step > 0:  # stop_on fired: this variant's later steps are not run
                run.stop(j)

    try:
        # Warm-up first (captures, and every kernel's first call: compiles and autotuning), the probes' graphs
        # with it, so the step-0 probe and the steps are timed as what they cost; the weights are not touched.
        run.warm_up(lambda: engine.capture_probes(batches))
        measure(0)
        for point in sorted({p for pts in points for p in pts if p > 0}):
            if run.done >= run.total:  # every variant finished or stopped
                break
            run.run(point, on_step)
            measure(point)
        losses = [run.losses(j) for j in range(k)]
        stats = [run.stats(j) for j in range(k)]
    finally:
        run.pause()
    seconds = time.perf_counter() - t_start
    peak, kind = _peak_memory()
    out = []
    train_s = max(seconds - eval_s[0], 1e-9)  # shared by the K variants: each one's tokens over it, as solo
    for j in range(k):
        fs, c = stats[j], curves[j]
        c.running_train_loss = [[i + 1, loss] for i, loss in enumerate(losses[j])]
        stats_j = TrainStats(seconds=round(seconds, 3), steps=fs.steps, epochs=c.epochs[-1], tokens=fs.real_tokens,
                             tokens_per_s=round(fs.real_tokens / train_s, 2), peak_memory_bytes=peak,
                             peak_memory_kind=kind, eval_seconds=round(eval_s[0], 3),
                             trainable_parameters=engine.stack.weights.shape[1], plan="fast",
                             plan_reason=plan_reason(k, fs), warmup_seconds=fs.warmup_seconds,
                             engine=f"multi-adapter, K={k}")
        keepers[j].finish(stats_j, totals[j])  # the kept adapter (best held-out probe) back into its row
        out.append((c, stats_j))
    return out, run
