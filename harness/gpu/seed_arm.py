"""One arm of `asciitune bench --workload seed`, in its own process: load, train the seed workload, record.

    python -m harness.gpu.seed_arm --config ARM.json --name fast-unsloth --out ARM-OUT.json

The config says the backend, `train.plan` ("seed": TRL's SFTTrainer exactly as `asciitune run` sets it
up; "fast": harness.train.fast.plan, the path `asciitune run train.plan=fast` takes) and `model.load_in_4bit`.
Both plans load through the backend's own `load()`. The record is rewritten after every seed-plan step
(synchronized step times, the trainer's logged loss, peak memory), so an arm the parent stops at its time
cap still reports a measured partial run. Peak memory counts from before the load: weights included.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from harness.config import RunConfig
from harness.fsutil import atomic_write_json
from harness.gpu.worker import ARCH_KEYS, BatchLog


def _peak() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"peak_reserved_bytes": None, "peak_allocated_bytes": None}
    return {"peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
            "peak_allocated_bytes": int(torch.cuda.max_memory_allocated())}


def _memory_now() -> dict:
    """Reserved and allocated bytes now and at their peaks: read after load and after training, they say whether
    reserved memory far above allocated comes from loading or from the steps (graph pools, cached blocks)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"reserved": int(torch.cuda.memory_reserved()), "allocated": int(torch.cuda.memory_allocated()),
            "peak_reserved": int(torch.cuda.max_memory_reserved()),
            "peak_allocated": int(torch.cuda.max_memory_allocated())}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _load(cfg: RunConfig, rec: dict, out: Path):
    """Backend first (Unsloth must patch before transformers), then the model, timed; returns model, tok, backend."""
    from harness import backends

    backend = backends.get(cfg.model.backend)
    import torch

    from harness.models import resolve
    from harness.train.fast import plan as fast

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model, tok, info = backend.load(resolve(cfg.model.name), fast.load_config(cfg))
    backend.for_training(model)
    _sync()
    conf = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    rec.update(load_s=round(time.perf_counter() - t0, 3), backend_note=info["backend_note"], device=info["device"],
               dtype=info["dtype"], arch={k: conf[k] for k in ARCH_KEYS if conf.get(k) is not None},
               trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
               memory_after_load=_memory_now(), status="loaded")
    atomic_write_json(out, rec)
    return model, tok, backend


def run_seed(cfg: RunConfig, rec: dict, out: Path) -> None:
    """The seed plan: SFTTrainer with harness.train.sft.sft_config, each optimizer step synchronized and recorded."""
    model, tok, _ = _load(cfg, rec, out)
    import datasets
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from harness.data import build_dataset, check_lengths, format_example, token_lengths
    from harness.train.sft import sft_config, total_steps

    ds = build_dataset(cfg.data)
    check_lengths(ds.train, token_lengths(ds.train, tok), cfg.model.max_seq_length)
    texts = [format_example(p.text, tok.eos_token) for p in ds.train]
    rec.update(steps_planned=total_steps(len(texts), cfg), step_s=[], losses=[], tokens_per_step=[], sequences=0)
    batches: list[BatchLog] = []  # the trainer's collator, wrapped once the trainer exists

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            _sync()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            _sync()  # the step's kernels are done: its time is the step's, not the next one's
            now = time.perf_counter()
            rec["step_s"].append(round(now - self.t, 5))
            self.t = now
            rec["tokens_per_step"].append(sum(batches[0].real) - sum(rec["tokens_per_step"]))
            rec.update(steps=len(rec["step_s"]), sequences=batches[0].sequences, **_peak())
            atomic_write_json(out, rec)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                rec["losses"].append(float(logs["loss"]))
                atomic_write_json(out, rec)

    with tempfile.TemporaryDirectory(prefix="asciitune-seed-arm-") as tmp:
        args = sft_config(cfg, Path(tmp))
        rec["optimizer"] = str(getattr(args.optim, "value", args.optim))
        trainer = SFTTrainer(model=model, processing_class=tok, args=args, callbacks=[Recorder()],
                             train_dataset=datasets.Dataset.from_dict({"text": texts}))
        batches.append(BatchLog(trainer.data_collator))  # real tokens and sequences of every micro-batch
        trainer.data_collator = batches[0]
        trainer.train()
    # No separate warm-up in the seed plan: its first step carries Unsloth's compiles, inside train_seconds.
    rec.update(status="ok", train_seconds=round(sum(rec["step_s"]), 4), warmup_seconds=rec["step_s"][0],
               tokens=sum(rec["tokens_per_step"]), plan_reason="TRL SFTTrainer as the seed notebook sets it up")
    atomic_write_json(out, rec)


def run_fast(cfg: RunConfig, rec: dict, out: Path, mode: str = "auto", micro_tokens: int | None = None) -> None:
    """The fast plan through harness.train.fast.run_fast_variant: probes at the eval steps, as in a run."""
    model, tok, _ = _load(cfg, rec, out)
    from harness.data import build_dataset
    from harness.train.fast.plan import Engine, run_fast_variant
    from harness.train.fast.stepmath import seed_plan_batches

    ds, t = build_dataset(cfg.data), cfg.train
    engine = Engine(model, cfg.train, mode=mode, micro_tokens=micro_tokens)
    try:
        curves, stats, fs = run_fast_variant(model, tok, ds, cfg, engine=engine)
        rec["memory_after_train"] = _memory_now()  # before close() frees the graphs and their pool
    finally:
        engine.close()
    plan = seed_plan_batches(len(ds.train), t.batch_size, t.grad_accum, t.epochs, t.max_steps, t.seed)
    rec.update(status="ok", steps=fs.steps, steps_planned=len(plan), losses=[x[1] for x in curves.running_train_loss],
               train_seconds=fs.train_seconds, warmup_seconds=fs.warmup_seconds, tokens=fs.real_tokens,
               padded_tokens=fs.padded_tokens, step_ms=fs.step_ms, buckets=fs.buckets, mode=fs.mode,
               micro_tokens=fs.micro_tokens, rows=fs.rows,
               attention=fs.attention, optimizer=fs.optimizer, plan_reason=stats.plan_reason,
               eval_seconds=stats.eval_seconds, probe_steps=curves.steps, probe_heldout_loss=curves.heldout_loss,
               sequences=sum(len(mb) for step in plan[: fs.steps] for mb in step), **_peak())
    atomic_write_json(out, rec)


def run_solo_sweep(cfg: RunConfig, rec: dict, out: Path, lrs: list[float], mode: str = "auto",
                   reruns: list[float] = (), fused: list[float] = ()) -> None:
    """The sweep's variants (cfg at each lr) trained alone on the fast plan, one after another over one Engine
    (its graphs captured once, LoRA and AdamW reset per variant): the reference for the multi-adapter sweep's
    parity. On Unsloth the reference runs with its fused LoRA kernels declined (peft's LoRA forwards, the path the
    engine's stacked layers take); the lrs in `reruns` are trained so twice (the run's own spread, which bounds the
    parity), those in `fused` last once more with the fused kernels (the default solo plan, reported beside).
    Each lr's per-step losses; no probes: they never change training."""
    from dataclasses import replace

    model, tok, _ = _load(cfg, rec, out)
    from harness.data import build_dataset, format_example
    from harness.train.fast.engine import Engine
    from harness.train.fast.plan import plan_reason
    from harness.train.fast.run import FastRun

    ds = build_dataset(cfg.data)
    texts = [format_example(p.text, tok.eos_token) for p in ds.train]
    rec.update(sweep_losses={}, sweep_train_seconds={}, sweep_warmup_seconds={}, sweep_rerun_losses={},
               sweep_fused_losses={}, sweep_fused_train_seconds={}, status="training")

    def train_all(engine: Engine, todo: list[float], losses: str, seconds: str | None) -> None:
        for lr in todo:
            run = FastRun(engine, tok, texts, replace(cfg.train, lr=lr), max_length=cfg.model.max_seq_length)
            run.warm_up()
            run.run(run.total)
            run.pause()
            fs = run.stats()
            rec[losses][repr(lr)] = run.losses()
            if seconds:
                rec[seconds][repr(lr)] = fs.train_seconds
            if losses == "sweep_losses":
                rec["sweep_warmup_seconds"][repr(lr)] = fs.warmup_seconds
                rec.update(plan_reason=plan_reason(fs, cfg), steps=fs.steps)
            rec.update(**_peak())
            atomic_write_json(out, rec)

    rec["lora_forward"] = "the backend's own"
    undo = None
    if cfg.model.backend == "unsloth":
        from harness.backends import unsloth_private

        undo = unsloth_private.decline_fused_lora(model, "the sweep's solo reference: the engine's LoRA forwards")
        rec["lora_forward"] = "peft's (Unsloth's fused LoRA kernels declined), as the multi-adapter engine's"
    engine = Engine(model, cfg.train, mode=mode)
    try:
        for lr in lrs:
            train_all(engine, [lr], "sweep_losses", "sweep_train_seconds")
            if lr in reruns:
                train_all(engine, [lr], "sweep_rerun_losses", None)
    finally:
        engine.close()
    if fused and undo is not None:  # last: the reference and its spread come first when the arm's cap is short
        undo()
        engine = Engine(model, cfg.train, mode=mode)
        try:
            train_all(engine, list(fused), "sweep_fused_losses", "sweep_fused_train_seconds")
        finally:
            engine.close()
    rec.update(status="ok", train_seconds=round(sum(rec["sweep_train_seconds"].values()), 4))
    atomic_write_json(out, rec)


def main(argv: list[str] | None = None) -> int:
    """Child entry point, started by harness.gpu.seed once per arm."""
    from harness.quiet import quiet_third_party

    quiet_third_party()
    p = argparse.ArgumentParser(prog="python -m harness.gpu.seed_arm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="the arm's resolved config (JSON)")
    p.add_argument("--name", required=True, help="the arm's name, e.g. fast-unsloth")
    p.add_argument("--out", required=True, type=Path, help="where the arm's record is (re)written")
    p.add_argument("--mode", default="auto", choices=["auto", "eager", "graphs"], help="fast plan: how steps run")
    p.add_argument("--micro-tokens", type=int, default=None,
                   help="fast plan: the cap on a packed row's tokens (default: the backend's, 0: one row per step)")
    p.add_argument("--sweep-lrs", default=None, metavar="LR,LR,...",
                   help="fast plan: train the config at each of these lrs alone, one after another (the sweep's "
                        "solo reference, with the engine's LoRA forwards); records per-lr losses")
    p.add_argument("--sweep-reruns", default="", metavar="LR,LR,...", help="with --sweep-lrs: lrs trained twice")
    p.add_argument("--sweep-fused", default="", metavar="LR,LR,...",
                   help="with --sweep-lrs on Unsloth: lrs also trained with its fused LoRA kernels")
    args = p.parse_args(argv)
    cfg = RunConfig.from_dict(json.loads(args.config.read_text(encoding="utf-8")))
    rec = {"name": args.name, "backend": cfg.model.backend, "plan": cfg.train.plan,
           "load_in_4bit": cfg.model.load_in_4bit, "status": "started"}
    atomic_write_json(args.out, rec)
    from harness.errors import UserError

    try:
        if args.sweep_lrs:
            floats = [[float(x) for x in s.split(",") if x] for s in (args.sweep_lrs, args.sweep_reruns,
                                                                       args.sweep_fused)]
            run_solo_sweep(cfg, rec, args.out, floats[0], args.mode, floats[1], floats[2])
        elif cfg.train.plan == "fast":
            run_fast(cfg, rec, args.out, args.mode, args.micro_tokens)
        else:
            run_seed(cfg, rec, args.out)
    except UserError as exc:  # e.g. 4-bit without a GPU: the arm is recorded as refused, in one sentence
        rec["status"] = f"refused: {exc}"
        atomic_write_json(args.out, rec)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[bench] {args.name}: {rec['status']}, {rec.get('steps')} steps, {rec.get('train_seconds')} s of steps",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
