"""Train one variant with TRL's SFTTrainer and measure train vs held-out loss along the way.

    asciitune train --variant learn          # one variant of the default config (its own child process)

The backend module must already be imported (see harness.backends.get): this module only
imports trl/transformers inside functions so that unsloth can come first.
"""
from __future__ import annotations

import copy
import importlib.util
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.data import Dataset, check_lengths, format_example, token_lengths
from harness.errors import UserError
from harness.results import LossCurves, TrainStats, VariantResult
from harness.train.keep import Keeper

TRACKING_DIR = "tensorboard"  # <run>/tensorboard/<variant>: TensorBoard event files, beside the run's results


@dataclass
class Probes:
    """Fixed texts whose loss is measured at every eval point."""

    train: list[str]
    heldout: list[str]


def make_probes(ds: Dataset, cfg: RunConfig, eos: str) -> Probes:
    """Held-out pieces (or the first train.eval_heldout_pieces), and as many training pieces for the train side."""
    heldout = ds.heldout[: cfg.train.eval_heldout_pieces] if cfg.train.eval_heldout_pieces else ds.heldout
    n_train = cfg.train.eval_train_pieces or len(heldout)
    return Probes(train=[format_example(p.text, eos) for p in ds.train[:n_train]],
                  heldout=[format_example(p.text, eos) for p in heldout])


def probe_loss(model, tokenizer, texts: list[str], max_batch_tokens: int = 2048) -> float:
    """Token-weighted mean next-token loss over texts, in eval mode, without gradients."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids_list = tokenizer(texts, add_special_tokens=False)["input_ids"]
    # Length-sorted batches under a token budget: little padding, and the [batch, length, vocab]
    # logits stay small on CPU. The token-weighted mean does not depend on the batching.
    order = sorted(range(len(ids_list)), key=lambda i: len(ids_list[i]))
    batches, current = [], []
    for i in order:
        if current and len(ids_list[i]) * (len(current) + 1) > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            width = max(len(ids_list[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(ids_list[i])] = torch.tensor(ids_list[i])
                mask[row, : len(ids_list[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            labels = ids.masked_fill(mask == 0, -100)
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            n = int((labels[:, 1:] != -100).sum())
            total += float(out.loss) * n
            count += n
    if was_training:
        model.train()
    return total / max(count, 1)


def total_steps(n_examples: int, cfg: RunConfig) -> int:
    """Optimizer steps the trainer will take (mirrors transformers' arithmetic)."""
    t = cfg.train
    if t.max_steps > 0:
        return t.max_steps
    per_epoch = max(1, math.ceil(math.ceil(n_examples / t.batch_size) / t.grad_accum))
    return max(1, math.ceil(t.epochs * per_epoch))


def eval_steps(steps: int, points: int) -> list[int]:
    """Steps at which both losses are measured: 0, about `points` evenly spaced, and the last."""
    every = max(1, steps // max(points, 1))
    return sorted({0, steps, *range(every, steps + 1, every)})


def _peak_memory() -> tuple[int, str]:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_reserved()), "cuda_max_reserved"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_max_rss"


def trackers(cfg: RunConfig) -> list[str]:
    """train.report_to as the list TRL takes; [] for "none"."""
    names = [n.strip() for n in cfg.train.report_to.split(",") if n.strip()]
    return [] if "none" in names else names


def uses_tensorboard(cfg: RunConfig) -> bool:
    """Whether train.report_to sends anything to TensorBoard."""
    return any(n in ("tensorboard", "all") for n in trackers(cfg))


def tracking_dir(output_dir: Path) -> Path:
    """Where a variant's TensorBoard events go: output_dir is <run>/checkpoints/<variant> (harness.train.job)."""
    return Path(output_dir).parent.parent / TRACKING_DIR / Path(output_dir).name


def log_scores(cfg: RunConfig, output_dir: Path, result: VariantResult) -> None:
    """Final scores, loss analysis and verdict into TensorBoard beside the training curves, if report_to has it.

    The trainer's own trackers stop with training; the scores exist only after sampling, so they are
    written here with a writer of their own, at the last optimizer step. Other trackers get the losses only.
    """
    if not uses_tensorboard(cfg):
        return
    from torch.utils.tensorboard import SummaryWriter

    step = result.train.steps
    with SummaryWriter(str(tracking_dir(output_dir))) as writer:
        for name, m in result.scores.metrics.items():
            if m.value is not None:
                writer.add_scalar(f"final/{name}", m.value, step)
        la = result.loss_analysis
        if la is not None:
            for key in ("heldout_min", "heldout_min_step", "final_train_loss", "final_heldout_loss", "train_drop"):
                writer.add_scalar(f"final/{key}", getattr(la, key), step)
        if result.verdict is not None:
            v = result.verdict
            writer.add_text("final/verdict", f"{v.verdict} (loss curves: {v.loss_verdict}; samples: "
                                             f"{v.copy_verdict})", step)


def sft_config(cfg: RunConfig, output_dir: Path):
    """Map our few training settings onto TRL's SFTConfig, in this one place."""
    import torch
    from trl import SFTConfig

    t = cfg.train
    optim = t.optim
    if optim == "auto":
        optim = "adamw_8bit" if torch.cuda.is_available() else "adamw_torch"
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return SFTConfig(
        output_dir=str(output_dir), dataset_text_field="text", max_length=cfg.model.max_seq_length,
        packing=False, per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs, max_steps=t.max_steps, learning_rate=t.lr, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, seed=t.seed, data_seed=t.seed, optim=optim,
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to=trackers(cfg) or "none", bf16=bf16,
        fp16=False, include_num_input_tokens_seen="non_padding", dataset_num_proc=1,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=False,
        gradient_checkpointing=False,  # the backend already set checkpointing up
    )


def train_variant(model, tokenizer, ds: Dataset, cfg: RunConfig, output_dir: Path,
                  on_eval: Callable[[int, float, float], None] | None = None,
                  on_step: Callable[[int, int], None] | None = None) -> tuple[LossCurves, TrainStats]:
    """Run SFTTrainer on the training pieces, measuring both probe losses at the planned steps."""
    import datasets
    from transformers import TrainerCallback
    from trl import SFTTrainer

    check_lengths(ds.train, token_lengths(ds.train, tokenizer), cfg.model.max_seq_length)
    probes = make_probes(ds, cfg, tokenizer.eos_token)
    train_set = datasets.Dataset.from_dict({"text": [format_example(p.text, tokenizer.eos_token) for p in ds.train]})
    planned = total_steps(len(ds.train), cfg)
    plan = eval_steps(planned, cfg.train.eval_points)
    curves = LossCurves()
    eval_time = [0.0]
    keeper = Keeper(model, cfg.train)

    def measure(step: int, epoch: float) -> None:
        t0 = time.perf_counter()
        tr = probe_loss(model, tokenizer, probes.train, cfg.train.eval_batch_tokens)
        ho = probe_loss(model, tokenizer, probes.heldout, cfg.train.eval_batch_tokens)
        eval_time[0] += time.perf_counter() - t0
        curves.steps.append(step)
        curves.epochs.append(round(epoch, 4))
        curves.train_loss.append(tr)
        curves.heldout_loss.append(ho)
        if on_eval:
            on_eval(step, tr, ho)
        if trackers(cfg):  # to every tracker, at this step; eval_* keys show as eval/... beside TRL's train/loss
            # Through the callbacks, not trainer.log: SFTTrainer.log would take (and clear) its own step metrics.
            # A copy of the control: on_log clears should_log, which would drop this step's train loss.
            trainer.callback_handler.on_log(trainer.args, trainer.state, copy.copy(trainer.control),
                                            {"eval_train_probe_loss": tr, "eval_heldout_loss": ho})

    class LossCurveCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            measure(0, 0.0)
            keeper.observe(curves)

        def on_step_end(self, args, state, control, **kw):
            if state.global_step in plan and state.global_step not in curves.steps:
                measure(state.global_step, state.epoch or 0.0)
                control.should_training_stop = keeper.observe(curves) or control.should_training_stop
            if on_step:
                on_step(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                curves.running_train_loss.append([state.global_step, float(logs["loss"])])

    if uses_tensorboard(cfg):
        if importlib.util.find_spec("tensorboard") is None:  # else TRL stops with a traceback mid-setup
            raise UserError("train.report_to asks for TensorBoard, which is not installed: run "
                            "`pip install tensorboard` (setup.sh's dev extras include it), or drop it from report_to.")
        # transformers 5 has no logging_dir argument: its TensorBoard callback reads this variable instead.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tracking_dir(output_dir))
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train_set,
                         args=sft_config(cfg, output_dir), callbacks=[LossCurveCallback()])
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    state = trainer.state
    if state.global_step not in curves.steps:
        measure(state.global_step, state.epoch or 0.0)
        keeper.observe(curves)
    train_seconds = max(seconds - eval_time[0], 1e-9)
    tokens = int(state.num_input_tokens_seen)
    peak, kind = _peak_memory()
    stats = TrainStats(seconds=round(seconds, 3), steps=state.global_step, epochs=round(state.epoch or 0.0, 4),
                       tokens=tokens, tokens_per_s=round(tokens / train_seconds, 2), peak_memory_bytes=peak,
                       peak_memory_kind=kind, eval_seconds=round(eval_time[0], 3),
                       trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad))
    keeper.finish(stats, planned)
    return curves, stats

