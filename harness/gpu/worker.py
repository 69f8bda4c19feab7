"""One backend's side of `asciitune bench`, in its own process (Unsloth patches transformers globally).

    python -m harness.gpu.worker --config CFG.json --points POINTS.json --backend peft --out OUT.json

Loads the model once through the backend's own `load()` (the harness's training path), then
for every grid point resets the LoRA weights to their freshly initialised values and trains
`bench.warmup_steps + bench.steps` optimizer steps through TRL's SFTTrainer with the
harness's `sft_config`, so what is timed is what `asciitune run` executes. A callback
synchronizes the GPU at the start and end of every optimizer step; a wrapper around the
trainer's collator records each micro-batch's real tokens and a fingerprint, so the parent
can check that both backends saw identical batches. Out-of-memory at one point is recorded
as status "oom" and the next point runs. The result file is rewritten after every point.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

from harness import environment
from harness.config import RunConfig
from harness.errors import UserError
from harness.fsutil import atomic_write_json
from harness.gpu.bench import PointSpec

ARCH_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "head_dim", "vocab_size", "tie_word_embeddings", "num_experts_per_tok")


def say(msg: str) -> None:
    """A progress line the parent echoes (it shows lines starting with '[bench')."""
    print(f"[bench] {msg}", flush=True)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure_matmul_tflops(n: int = 8192, iters: int = 50) -> float:
    """Dense bf16 matmul rate of this card (n^3, mean of `iters` after 5 warm-ups); small fp32 on CPU."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        n, iters = 512, 5
    dtype, device = (torch.bfloat16, "cuda") if cuda else (torch.float32, "cpu")
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, dtype=dtype, device=device, generator=gen)
    b = torch.randn(n, n, dtype=dtype, device=device, generator=gen)
    out = torch.empty_like(a)
    for _ in range(5):
        torch.mm(a, b, out=out)
    _sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        torch.mm(a, b, out=out)
    _sync()
    seconds = time.perf_counter() - t0
    del a, b, out
    if cuda:
        torch.cuda.empty_cache()
    return 2 * n ** 3 * iters / seconds / 1e12


def card_info() -> dict:
    """Name, memory and capability of the compute device."""
    import torch

    if not torch.cuda.is_available():
        from harness.backends.common import device_name
        return {"name": device_name(), "cuda": None}
    p = torch.cuda.get_device_properties(0)
    return {"name": p.name, "total_memory_bytes": int(p.total_memory), "capability": f"{p.major}.{p.minor}",
            "multiprocessors": p.multi_processor_count, "cuda": torch.version.cuda}


def versions() -> dict:
    """Versions of what the step runs on, read in this process (the GPU image's own torch), and its CUDA."""
    import torch

    return {**environment.versions(), "cuda": torch.version.cuda}


class BatchLog:
    """Wraps a collator: real tokens, padded tokens and a fingerprint of every micro-batch, in order."""

    def __init__(self, collate):
        self.collate = collate
        self.sequences = 0
        self.real: list[int] = []
        self.padded: list[int] = []
        self.fingerprints: list[str] = []

    def __getattr__(self, name):  # trainers inspect their collator (e.g. .padding_free): answer as it would
        if name == "collate":
            raise AttributeError(name)
        return getattr(self.collate, name)

    def __call__(self, examples):
        ids = [ex["input_ids"] for ex in examples]
        # Lengths plus both ends of every example: cheap, and independent of padded vs padding-free collation.
        self.fingerprints.append(hashlib.sha1(repr([(len(x), list(x[:8]), list(x[-8:])) for x in ids])
                                              .encode()).hexdigest()[:16])
        self.real.append(sum(len(x) for x in ids))
        self.sequences += len(ids)
        batch = self.collate(examples)
        self.padded.append(int(batch["input_ids"].numel()))
        return batch


def _timer_callback():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Synchronized timestamps at train start and at each optimizer step's start and end."""

        def __init__(self):
            self.start = 0.0
            self.begin: list[float] = []
            self.end: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            _sync()
            self.start = time.perf_counter()

        def on_step_begin(self, args, state, control, **kw):
            _sync()
            self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            _sync()
            self.end.append(time.perf_counter())

    return StepTimer()


def _train_set(spec: PointSpec, cfg: RunConfig, train_texts: list[str]):
    """Cats as text (SFTTrainer tokenizes, the collator pads per batch) or seeded random full-length rows."""
    import datasets
    import torch

    if spec.workload == "cats":
        return datasets.Dataset.from_dict({"text": train_texts})
    rows = (cfg.bench.warmup_steps + cfg.bench.steps) * spec.batch_size * spec.grad_accum
    gen = torch.Generator().manual_seed(cfg.train.seed)
    # Printable-ASCII ids, no padding: the same kind of batch as the bare reference loop.
    ids = torch.randint(32, 127, (rows, spec.seq_len), generator=gen)
    return datasets.Dataset.from_dict({"input_ids": ids.tolist()})


def _train_point(model, tok, spec: PointSpec, cfg: RunConfig, train_texts: list[str], out_dir: Path) -> dict:
    """SFTTrainer for warm-up + measured steps at one point; raw timings, tokens and losses."""
    from trl import SFTTrainer

    from harness.train.sft import sft_config

    b = cfg.bench
    n_steps = b.warmup_steps + b.steps
    point_cfg = replace(
        cfg, train=replace(cfg.train, batch_size=spec.batch_size, grad_accum=spec.grad_accum, max_steps=n_steps,
                           optim=spec.optim or cfg.train.optim),
        model=replace(cfg.model, max_seq_length=max(cfg.model.max_seq_length, spec.seq_len)))
    args = sft_config(point_cfg, out_dir)
    timer = _timer_callback()
    t0 = time.perf_counter()
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=_train_set(spec, cfg, train_texts),
                         args=args, callbacks=[timer])
    log = BatchLog(trainer.data_collator)
    trainer.data_collator = log
    setup_s = time.perf_counter() - t0
    trainer.train()
    ga = spec.grad_accum
    steps = len(timer.end)
    ends = [timer.start, *timer.end]
    intervals = [ends[i + 1] - ends[i] for i in range(steps)]
    inner = [e - s for s, e in zip(timer.begin, timer.end, strict=True)]
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    per_step = lambda xs: [sum(xs[i * ga:(i + 1) * ga]) for i in range(steps)]
    return {"setup_s": setup_s, "step_s_all": intervals, "inner_s_all": inner,
            "real_tokens_all": per_step(log.real), "padded_tokens_all": per_step(log.padded),
            "losses": losses[: b.loss_steps],
            "batch_fingerprint": hashlib.sha1("".join(log.fingerprints[: b.loss_steps * ga]).encode()).hexdigest()[:16],
            "optim": str(getattr(args.optim, "value", args.optim)),
            "padding_free": bool(getattr(trainer.args, "padding_free", False)),
            "max_grad_norm": args.max_grad_norm}


def _cleanup(model, base_forward) -> None:
    """Free what a point left behind (also after OOM) and undo TRL's per-trainer forward patch."""
    import torch

    model.zero_grad(set_to_none=True)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base_forward is None:
        base.__dict__.pop("forward", None)
    else:
        base.forward = base_forward
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_point(model, tok, spec: PointSpec, cfg: RunConfig, train_texts: list[str], init_state: dict) -> dict:
    """One grid point from fresh adapters: status ok / oom / error plus raw numbers."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base_forward = base.__dict__.get("forward")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in init_state:
                p.copy_(init_state[name])
    _cleanup(model, base_forward)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out = {**spec.to_dict(), "status": "ok", "error": ""}
    try:
        with tempfile.TemporaryDirectory(prefix="asciitune-bench-") as tmp:
            out.update(_train_point(model, tok, spec, cfg, train_texts, Path(tmp)))
    except torch.OutOfMemoryError as exc:
        out.update(status="oom", error=str(exc).splitlines()[0][:300])
    except Exception as exc:  # one broken point must not lose the others
        out.update(status="error", error="".join(traceback.format_exception_only(exc)).strip()[-600:])
        traceback.print_exc()
    if cuda:
        out["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        out["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    else:
        out["peak_allocated_bytes"] = out["peak_reserved_bytes"] = None
    _cleanup(model, base_forward)
    return out


def run_worker(cfg: RunConfig, backend_name: str, points: list[PointSpec], out_path: Path) -> dict:
    """Load once, run every point, rewrite out_path after each; returns the worker's result."""
    from harness import backends

    backend = backends.get(backend_name)  # before transformers: Unsloth must patch first
    import torch

    from harness.backends.common import model_folder
    from harness.data import build_dataset, format_example
    from harness.models import resolve

    result: dict = {"backend": backend_name, "card": card_info(), "versions": versions(), "points": []}
    result["matmul_tflops"] = measure_matmul_tflops()
    say(f"{backend_name}: {result['card']['name']}, matmul {result['matmul_tflops']:.4g} TFLOP/s")
    resolved = resolve(cfg.model.name)
    t0 = time.perf_counter()
    folder = model_folder(resolved, cfg)  # random weights are written once; not part of load time
    result["materialize_s"] = round(time.perf_counter() - t0, 3)
    result["model_folder"] = str(folder)
    t0 = time.perf_counter()
    try:
        model, tok, info = backend.load(resolved, cfg)
    except UserError as exc:  # e.g. 4-bit without a GPU: every point is refused with the backend's one sentence
        result["refused"] = str(exc)
        atomic_write_json(out_path, result)
        say(f"{backend_name}: refused: {exc}")
        return result
    _sync()
    result["load_s"] = round(time.perf_counter() - t0, 3)
    backend.for_training(model)
    result.update(backend_note=info["backend_note"], device=info["device"], dtype=info["dtype"])
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    result["arch"] = {k: config[k] for k in ARCH_KEYS if config.get(k) is not None}
    result["n_params_total"] = sum(p.numel() for p in model.parameters())
    result["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    init_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_texts = []
    if any(s.workload == "cats" for s in points):
        train_texts = [format_example(p.text, tok.eos_token) for p in build_dataset(cfg.data).train]
    say(f"{backend_name}: loaded in {result['load_s']:.1f} s ({info['backend_note']}, {info['dtype']}); "
        f"{len(points)} point(s)")
    atomic_write_json(out_path, result)
    for spec in points:
        point = run_point(model, tok, spec, cfg, train_texts, init_state)
        result["points"].append(point)
        atomic_write_json(out_path, result)
        say(f"{backend_name} {spec.label}: {_one_line(point, cfg)}")
    del model, init_state
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _one_line(point: dict, cfg: RunConfig) -> str:
    if point["status"] != "ok":
        return f"{point['status'].upper()} {point['error'][:160]}"
    steps = sorted(point["step_s_all"][cfg.bench.warmup_steps:])
    median = steps[len(steps) // 2] if steps else float("nan")
    peak = point.get("peak_reserved_bytes")
    mem = f", peak reserved {peak / 1024 ** 3:.2f} GiB" if peak else ""
    first = f", first loss {point['losses'][0]:.4f}" if point.get("losses") else ""
    return f"median step {median:.4f} s{mem}{first}"


def main(argv: list[str] | None = None) -> int:
    """Child entry point, started by `asciitune bench` once per backend."""
    from harness.quiet import quiet_third_party

    quiet_third_party()
    p = argparse.ArgumentParser(prog="python -m harness.gpu.worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="the resolved config (JSON)")
    p.add_argument("--points", required=True, type=Path, help="the points to measure (JSON list)")
    p.add_argument("--backend", required=True, choices=["unsloth", "peft"])
    p.add_argument("--out", required=True, type=Path, help="where the worker's raw result is (re)written")
    args = p.parse_args(argv)
    cfg = RunConfig.from_dict(json.loads(args.config.read_text(encoding="utf-8")))
    points = [PointSpec(**{k: v for k, v in d.items() if k != "label"})
              for d in json.loads(args.points.read_text(encoding="utf-8"))]
    run_worker(cfg, args.backend, points, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
