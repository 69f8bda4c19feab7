"""The fast plan (`train.plan = "fast"`): the seed plan's optimizer-step math at the speed of the hardware.

    asciitune run --config seed train.plan=fast          # one variant: train_variant_fast; several: train.multi

A drop-in for harness.train.sft.train_variant: the same probes at the same eval steps, the same running
train loss per step, the same `(LossCurves, TrainStats)`. The step math is the seed plan's (the same
sequences per optimizer step, lr schedule, clipping and loss normalisation: harness.train.fast.stepmath);
what changes is only how a step executes (harness.train.fast.engine), and each change is free of math
changes:
- Padding-free packed rows (positions restart per sequence, attention block-diagonal) of at most
  `MICRO_TOKENS` tokens on a GPU, the whole step in one row on the CPU: each row's loss is divided by
  the step's target count, so the rows' gradients add up to the seed's.
- No gradient checkpointing, except for a sequence longer than the cap (a row of its own).
- The loss from the final hidden states, lm_head and cross-entropy a chunk of tokens at a time
  (harness.train.fast.chunked_loss), not the model's own loss over a row's full-vocabulary logits.
- Fused torch AdamW instead of the seed's 8-bit AdamW on a GPU: the one deliberate difference, held to
  the per-step loss parity bound by `asciitune bench --workload seed` (8-bit state is the seed's own
  approximation of the same update).
- No host syncs per step; on a GPU, one CUDA graph per row length and one for clip + AdamW (no
  compiler), reused by every fast variant the same process trains over the same base (harness.train.job).
- Probes (the train and held-out loss at each eval point) in the same packed rows, forward only: each
  row's summed token loss over the probe's target count, so the result is probe_loss's token-weighted
  mean; on a GPU one forward-only graph per row length, and one host read per eval point.

Measured by `asciitune bench --workload seed`: step times, warm-up, peak memory and per-step parity with the
seed plan for both backends are in reports/gpu-bench/seed-workload.json (the chunked loss's in
reports/gpu-bench/multi-adapter-h200/sweep-8.json), read in reports/gpu-bench/README.md. Eager steps are
host-bound whatever the row length (bench/seed_fast_probe.py), hence graphs on CUDA and eager on CPU.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from harness.config import RunConfig
from harness.data import Dataset, check_lengths, format_example, token_lengths
from harness.errors import UserError
from harness.results import LossCurves, TrainStats
from harness.train.fast.engine import BUCKET, Engine
from harness.train.fast.run import FastRun, FastStats
from harness.train.fast.stepmath import (  # noqa: F401  (re-exported: the plan's building blocks)
    block_causal_mask,
    pack_step,
    seed_plan_batches,
    split_step,
    tokenize_like_sft,
)
from harness.train.keep import Keeper
from harness.train.sft import _peak_memory, eval_steps, make_probes, total_steps

ADAMW = ("auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "adamw_bnb_8bit")  # what the fast plan runs
EIGHT_BIT = ("adamw_8bit", "adamw_bnb_8bit")
METRIC_SCHEDULERS = ("reduce_lr_on_plateau", "greedy")  # they step on an eval metric, which the plan never computes


def refusal(cfg: RunConfig) -> str | None:
    """The one sentence why the fast plan cannot reproduce this config's seed plan, or None when it can."""
    t = cfg.train
    if t.scheduler in METRIC_SCHEDULERS:
        return (f"train.scheduler={t.scheduler} steps on an eval metric that the fast plan never computes: "
                "use train.plan=seed, or a fixed schedule such as linear or cosine.")
    if t.optim not in ADAMW:
        return (f"train.optim={t.optim} has no equivalent in the fast plan, which runs fused AdamW: use "
                "train.plan=seed, or train.optim=auto / adamw_torch / adamw_8bit.")
    if t.report_to.strip() not in ("", "none"):
        return (f"train.report_to={t.report_to} needs the seed plan: the fast plan runs no Trainer, so no "
                "tracker would receive its losses; use train.plan=seed or train.report_to=none.")
    return None


def check(cfg: RunConfig) -> None:
    """Refuse, in one sentence, a config the fast plan cannot reproduce (before any model loads)."""
    if cfg.train.plan == "fast" and (why := refusal(cfg)):
        raise UserError(why)


def load_config(cfg: RunConfig) -> RunConfig:
    """The config to load the model with: the fast plan loads without gradient checkpointing."""
    if cfg.train.plan != "fast" or cfg.lora.gradient_checkpointing == "false":
        return cfg
    return replace(cfg, lora=replace(cfg.lora, gradient_checkpointing="false"))


def plan_reason(stats: FastStats, cfg: RunConfig) -> str:
    """How the fast plan executed and why, for TrainStats.plan_reason."""
    cpu = stats.device == "cpu"
    if stats.mode == "graphs":  # eager steps of ~1k tokens are bound by kernel launches, not by compute
        how = f"CUDA graphs per {BUCKET}-token row length ({len(stats.buckets)} lengths"
        how += f", {stats.reused_graphs} reused from an earlier variant)" if stats.reused_graphs else ")"
    else:
        how = "eager on CPU (CUDA graphs need a GPU)" if cpu else f"eager ({stats.attention} attention)"
    rows = (f"packed rows of <= {stats.micro_tokens} tokens ({stats.rows} rows for {stats.steps} steps: memory)"
            if stats.micro_tokens and stats.rows > stats.steps else "one packed row per optimizer step")
    opt = "torch AdamW" if cpu else "fused AdamW"
    if not cpu and cfg.train.optim in ("auto", *EIGHT_BIT):
        opt += " instead of adamw_8bit"
    ckpt = (f"checkpointing only in the {stats.checkpointed_rows} rows of one sequence longer than the cap"
            if stats.checkpointed_rows else "checkpointing off")
    probes = ("probes as forward-only CUDA graphs of the same rows" if stats.probes == "graphs"
              else f"probes {stats.probes} in the same rows")
    loss = ("loss chunked over the final hidden states (no full-vocabulary logits)" if stats.loss == "chunked"
            else f"the model's own loss: {stats.loss}")
    return f"{how}; {rows}; {opt}; {ckpt}; {probes}; {loss}"


def run_fast_variant(model, tokenizer, ds: Dataset, cfg: RunConfig,
                     on_eval: Callable[[int, float, float], None] | None = None,
                     on_step: Callable[[int, int], None] | None = None, *, mode: str = "auto",
                     limit: int = 0, engine: Engine | None = None) -> tuple[LossCurves, TrainStats, FastStats]:
    """train_variant_fast plus the engine's own stats (per-step device times, row lengths): for the bench.

    engine: one made by an earlier variant over this model in this process (its graphs are replayed); None
    makes one for this variant alone and frees it at the end.
    """
    if why := refusal(cfg):
        raise UserError(why)
    check_lengths(ds.train, token_lengths(ds.train, tokenizer), cfg.model.max_seq_length)
    probes = make_probes(ds, cfg, tokenizer.eos_token)
    texts = [format_example(p.text, tokenizer.eos_token) for p in ds.train]
    total = total_steps(len(ds.train), cfg)
    points = [s for s in eval_steps(total, cfg.train.eval_points) if s <= (limit or total)]
    curves, eval_s = LossCurves(), [0.0]
    t_start = time.perf_counter()
    own = engine is None
    engine = engine or Engine(model, cfg.train, mode=mode)
    run = FastRun(engine, tokenizer, texts, cfg.train, max_length=cfg.model.max_seq_length, limit=limit)
    per_epoch = -(-len(texts) // cfg.train.batch_size)  # micro-batches per epoch, as transformers counts epochs
    micro = [0]
    for step in run.plan:
        micro.append(micro[-1] + len(step))

    # The probes' texts packed like training rows, once: each eval point is a few forward-only row passes (graph
    # replays on a GPU) and one host read, instead of probe_loss's padded batches and a sync per batch.
    sets = [run.probe_set(tokenizer, texts) for texts in (probes.train, probes.heldout)]
    dropout = cfg.lora.dropout > 0  # then probe in eval mode, as probe_loss does; without it both modes agree

    def measure(step: int) -> None:
        import torch

        t0 = time.perf_counter()
        if dropout:
            model.eval()
        sums = torch.zeros(len(sets), dtype=torch.float32, device=run.device)
        for k, (rows, n) in enumerate(sets):
            engine.probe(rows, n, sums[k:k + 1])
        tr, ho = sums.tolist()
        if dropout:
            model.train()
        eval_s[0] += time.perf_counter() - t0
        curves.steps.append(step)
        curves.epochs.append(round(micro[step] / per_epoch, 4))
        curves.train_loss.append(tr)
        curves.heldout_loss.append(ho)
        if on_eval:
            on_eval(step, tr, ho)

    def capture_probes() -> None:
        if dropout:  # probes run in eval mode (no dropout): their graphs are captured so
            model.eval()
        for rows, n in sets:
            engine.capture_probes(rows, n)
        if dropout:
            model.train()

    keeper = Keeper(model, cfg.train)
    try:
        # Warm-up first (captures, and every kernel's first call), the probes' graphs with it, so the step-0 probe and
        # the steps are timed as what they cost; it leaves the weights alone, so step 0 is still before any update.
        run.warm_up(capture_probes)
        measure(0)  # before any update, as the seed plan's on_train_begin
        keeper.observe(curves)
        for point in [p for p in points if p > 0] + [run.total]:
            run.run(point, on_step)
            if run.done not in curves.steps:
                measure(run.done)
                if keeper.observe(curves):  # train.stop_on fired: the steps after this probe are not run
                    break
        losses, fast = run.losses(), run.stats()
    finally:
        run.pause()
        if own:
            engine.close()
    seconds = time.perf_counter() - t_start
    curves.running_train_loss = [[i + 1, loss] for i, loss in enumerate(losses)]
    peak, kind = _peak_memory()
    tokens = fast.real_tokens
    stats = TrainStats(seconds=round(seconds, 3), steps=fast.steps, epochs=curves.epochs[-1], tokens=tokens,
                       tokens_per_s=round(tokens / max(seconds - eval_s[0], 1e-9), 2), peak_memory_bytes=peak,
                       peak_memory_kind=kind, eval_seconds=round(eval_s[0], 3),
                       trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
                       plan="fast", plan_reason=plan_reason(fast, cfg), warmup_seconds=fast.warmup_seconds,
                       engine="solo")
    keeper.finish(stats, run.planned)
    return curves, stats, fast


def train_variant_fast(model, tokenizer, ds: Dataset, cfg: RunConfig, output_dir: Path,
                       on_eval: Callable[[int, float, float], None] | None = None,
                       on_step: Callable[[int, int], None] | None = None,
                       engine: Engine | None = None) -> tuple[LossCurves, TrainStats]:
    """The fast plan as a drop-in for harness.train.sft.train_variant (output_dir is unused: no checkpoints)."""
    curves, stats, _ = run_fast_variant(model, tokenizer, ds, cfg, on_eval, on_step, engine=engine)
    return curves, stats


def train_fast(model, tokenizer, texts: list[str], cfg, *, mode: str = "auto", attention: str = "auto",
               max_length: int | None = 2048, bucket: int = BUCKET, micro_tokens: int | None = None,
               on_step: Callable[[int, int], None] | None = None) -> tuple[list[float], FastStats]:
    """Train on texts with cfg's (a TrainConfig or alike) step math, no probes: per-step losses and stats."""
    engine = Engine(model, cfg, mode=mode, attention=attention, bucket=bucket, micro_tokens=micro_tokens)
    run = FastRun(engine, tokenizer, texts, cfg, max_length=max_length)
    try:
        run.warm_up()
        run.run(run.total, on_step)
        return run.losses(), run.stats()
    finally:
        run.pause()
        engine.close()
