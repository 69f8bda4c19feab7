"""GPU benchmark: Unsloth vs plain PEFT speed, memory and loss parity on identical batches.

    asciitune bench --config seed --model random:llama-3.2-3b bench.batch_sizes=[2,8] bench.seq_lens=[512,1024]

Each backend runs in its own child process (`python -m harness.gpu.worker`)
over the same points: a grid of batch size x sequence length on seeded random full-length
rows, and the original workload (real cats at train.batch_size x train.grad_accum, padded per
batch, or padding-free where Unsloth picks that). Per point: median optimizer-step wall time
after warm-up and its IQR, training tokens/s counting real (non-padding) tokens, peak
allocated and reserved GPU memory (reset per point), the loss of the first bench.loss_steps
steps, and MFU. A point that runs out of memory is recorded as "oom" and the grid goes on.
Results go to reports/runs/<id>/results.json as `RunResult.bench`.

MFU convention: model FLOPs per token = 3 x forward FLOPs, forward = 2 x every matmul weight
(q, k, v, o, gate, up, down per layer, and the LM head) + the attention scores 4 x n_heads x
head_dim x seq_len per layer (non-causal, as PaLM / nanoGPT / trl.compute_flops_per_token),
so about 6 x N_params + attention. LoRA training does less real work (no weight gradients for
frozen weights) plus a recomputed forward under checkpointing; the convention keeps the
number comparable with other MFU figures. The peak is the card's bf16 matmul rate measured
in the same run (8192^3), not the datasheet.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import environment
from harness.config import Plan, RunConfig
from harness.errors import UserError
from harness.fsutil import atomic_write_json
from harness.gpu.parity import BENCH_RTOL, WHY, WHY_4BIT, bench_parity
from harness.procs import run_logged
from harness.results import RUNS_DIR, BenchResult, RunResult, build, new_run_id

BACKEND_ORDER = ("unsloth", "peft")
BARE_LOOP_WITHIN = 0.03  # the harness's step may be at most 3% slower than the bare reference loop


@dataclass(frozen=True)
class PointSpec:
    """One benchmark point: a workload at a batch shape, optionally with another optimizer."""

    workload: str  # "cats" (the original data, padded per batch) or "synthetic" (random full-length rows)
    batch_size: int
    seq_len: int  # 0 for cats: lengths vary, the mean real tokens per sequence is reported
    grad_accum: int = 1
    optim: str = ""  # "" = train.optim (auto: adamw_8bit on GPU)

    @property
    def label(self) -> str:
        """Short name, e.g. cats-b2x4 or b8-s1024 or b2-s512-adamw_torch."""
        base = f"cats-b{self.batch_size}x{self.grad_accum}" if self.workload == "cats" else \
            f"b{self.batch_size}-s{self.seq_len}"
        return base + (f"-{self.optim}" if self.optim else "")

    def to_dict(self) -> dict:
        """Spec fields plus the label."""
        return {**asdict(self), "label": self.label}


def parse_extra_point(text: str) -> PointSpec:
    """`BxS[:optim]`, e.g. `2x512:adamw_torch`: a synthetic point outside the grid."""
    shape, _, optim = text.partition(":")
    try:
        bs, sl = (int(x) for x in shape.lower().split("x"))
    except ValueError:
        raise UserError(f"Extra point '{text}' is malformed: write BATCHxSEQ[:optim], "
                        "e.g. 2x512:adamw_torch.") from None
    return PointSpec("synthetic", bs, sl, 1, optim.strip())


def plan_points(cfg: RunConfig, cats: bool = True, extra: list[PointSpec] | tuple = ()) -> list[PointSpec]:
    """Extra points, the grid from small to large, then the original cats workload.

    Order matters for Unsloth, whose compiled blocks specialize on the first shapes they see:
    the fixed-shape points come first, as in the bare loop; cats' varying lengths come last.
    """
    b = cfg.bench  # its ranges are checked with the config
    grid = sorted(((bs, sl) for bs in b.batch_sizes for sl in b.seq_lens), key=lambda p: (p[0] * p[1], p[1]))
    points = [*extra, *(PointSpec("synthetic", bs, sl) for bs, sl in grid)]
    if cats:
        points.append(PointSpec("cats", cfg.train.batch_size, 0, cfg.train.grad_accum))
    if not points:
        raise UserError("Nothing to benchmark: give bench.batch_sizes and bench.seq_lens, or keep the cats point.")
    return points


# ---------------------------------------------------------------- arithmetic (pure, tested on CPU)

def flops_per_token(arch: dict, seq_len: float) -> float:
    """Training FLOPs per token of the architecture in `arch` (a config's fields): TRL's compute_flops_per_token."""
    from types import SimpleNamespace

    from trl.trainer.utils import compute_flops_per_token

    fields = {"num_key_value_heads": arch.get("num_key_value_heads") or arch["num_attention_heads"], "head_dim": None,
              "num_experts_per_tok": None}
    return compute_flops_per_token(SimpleNamespace(**{**fields, **{k: v for k, v in arch.items() if v is not None}}),
                                   seq_len)


def median_iqr(values: list[float]) -> tuple[float | None, float | None]:
    """Median and interquartile range (inclusive quartiles); (None, None) when empty."""
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q3 - q1


def mfu(tokens_per_s: float | None, fpt: float | None, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilization: achieved model FLOP/s over the measured matmul peak."""
    if not tokens_per_s or not fpt or not peak_tflops:
        return None
    return tokens_per_s * fpt / (peak_tflops * 1e12)


def summarize_point(raw: dict, warmup: int, arch: dict, peak_tflops: float | None, load_s: float | None) -> dict:
    """A worker's raw point to the results schema: medians, IQR, tokens/s, MFU."""
    p = {k: v for k, v in raw.items() if not k.endswith("_all")}
    p.update(median_step_s=None, step_s_iqr=None, tokens_per_s=None, mfu=None, load_s=load_s, warmup_s=None)
    p.setdefault("losses", [])
    if raw.get("status") != "ok":
        return p
    steps, inner = raw.get("step_s_all") or [], raw.get("inner_s_all") or []
    measured, real = steps[warmup:], (raw.get("real_tokens_all") or [])[warmup:]
    padded = (raw.get("padded_tokens_all") or [])[warmup:]
    p["median_step_s"], p["step_s_iqr"] = median_iqr(measured)
    p["median_compute_s"], _ = median_iqr(inner[warmup:])  # step begin -> end, without collation and logging
    p["warmup_s"] = sum(steps[:warmup])
    p["step_s"] = [round(s, 5) for s in measured]
    if measured and real:
        p["tokens_per_s"] = sum(real) / sum(measured)
        p["real_tokens_per_step"] = statistics.mean(real)
        p["padding_fraction"] = 1 - sum(real) / sum(padded) if sum(padded) else 0.0
    rows = raw["batch_size"] * raw.get("grad_accum", 1)
    if raw.get("workload") == "cats" and real:
        # The workload's mean real length per sequence: the same for both backends whether they pad
        # or pack padding-free (padding is waste, not model FLOPs; padding_fraction shows it).
        p["seq_len"] = round(statistics.mean(real) / rows)
    if arch and p["seq_len"]:
        p["flops_per_token"] = flops_per_token(arch, p["seq_len"])
        p["mfu"] = mfu(p["tokens_per_s"], p["flops_per_token"], peak_tflops)
    return p


# ---------------------------------------------------------------- orchestration

def _echo_child(cmd: list[str], log_path: Path) -> int:
    """Run a child with its whole output in log_path, echoing its '[bench' lines; returns the exit code."""
    return run_logged(cmd, log_path, lambda line: print(line, flush=True) if line.startswith("[bench") else None)


def _worker(backend: str, cfg_file: Path, points_file: Path, run_dir: Path) -> dict:
    out = run_dir / "bench" / f"{backend}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "harness.gpu.worker", "--config", str(cfg_file), "--points", str(points_file),
           "--backend", backend, "--out", str(out)]
    code = _echo_child(cmd, run_dir / "logs" / f"bench-{backend}.log")
    result = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {"backend": backend, "points": []}
    result["exit_code"] = code
    if code != 0:
        tail = (run_dir / "logs" / f"bench-{backend}.log").read_text(encoding="utf-8", errors="replace")
        result["error"] = tail[-2000:]
    return result


def run_bare_loop(script: Path, backend: str, model_folder: str, spec: PointSpec, run_dir: Path,
                  steps: int = 20) -> dict:
    """The external reference loop for one backend at one shape; its RESULT line as a dict."""
    cmd = [sys.executable, str(script), "--backend", backend, "--model", model_folder, "--steps", str(steps),
           "--seq", str(spec.seq_len), "--bs", str(spec.batch_size)]
    log = run_dir / "logs" / f"bare-loop-{backend}.log"
    code = _echo_child(cmd, log)
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith("RESULT "):
            return {**json.loads(line[len("RESULT "):]), "command": " ".join(cmd[1:])}
    return {"backend": backend, "error": f"exit code {code}, no RESULT line (see {log.name})"}


def bare_loop_comparison(points: list[dict], extra: list[dict], bare: dict[str, dict], spec: PointSpec) -> list[dict]:
    """Harness step time vs the bare loop per backend, at the bare loop's shape, default and matched optimizer."""
    rows = []
    for backend, ref in bare.items():
        ref_s = ref.get("median_step_s")
        for p in [*points, *extra]:
            if (p["backend"], p.get("workload"), p["batch_size"], p["seq_len"]) != (backend, "synthetic",
                                                                                       spec.batch_size, spec.seq_len):
                continue
            step = p.get("median_step_s")
            ratio = step / ref_s if step and ref_s else None
            rows.append({"backend": backend, "harness_point": p["label"], "optim": p.get("optim"),
                         "harness_step_s": step, "harness_compute_s": p.get("median_compute_s"),
                         "bare_step_s": ref_s, "ratio": ratio,
                         "within_3pct": ratio is not None and ratio <= 1 + BARE_LOOP_WITHIN})
    return rows


def run_bench(plan: Plan, reports_dir: Path, backends: list[str] | None = None, cats: bool = True,
              extra: list[PointSpec] | tuple = (), bare_loop: Path | None = None,
              command: str = "") -> tuple[Path, RunResult]:
    """Benchmark every backend over the planned points; write and return the run folder and results."""
    from harness.data import build_dataset

    cfg = plan.base
    backends = backends or list(BACKEND_ORDER)
    points = plan_points(cfg, cats, extra)
    if bare_loop and not Path(bare_loop).is_file():
        raise UserError(f"Bare loop script '{bare_loop}' not found: pass the path of bare_loop.py.")
    data = build_dataset(cfg.data).summary() if cats else {}
    run_dir = Path(reports_dir) / RUNS_DIR / new_run_id(cfg.hash())
    cfg_file = atomic_write_json(run_dir / "configs" / "bench.json", cfg.to_dict())
    points_file = atomic_write_json(run_dir / "configs" / "bench-points.json", [p.to_dict() for p in points])
    run = RunResult(run_id=run_dir.name, created=datetime.now(UTC).isoformat(timespec="seconds"),
                    command=command, config_source=plan.source, base_config=cfg.to_dict(), config_hash=cfg.hash(),
                    environment=environment.snapshot(), data=data)
    print(f"[bench] run {run_dir}: {', '.join(backends)} over {', '.join(p.label for p in points)}", flush=True)
    workers = {}
    t0 = time.perf_counter()
    for backend in backends:
        workers[backend] = _worker(backend, cfg_file, points_file, run_dir)
    bench = merge(workers, cfg, points, extra)
    bench["wall_s"] = round(time.perf_counter() - t0, 1)
    if bare_loop:
        spec = extra[0] if extra else PointSpec("synthetic", 2, 512)
        folder = next((w["model_folder"] for w in workers.values() if w.get("model_folder")), "")
        bare = {b: run_bare_loop(Path(bare_loop), b, folder, spec, run_dir) for b in backends} if folder else {}
        bench["bare_loop"] = {
            "script": str(bare_loop), "sha256": hashlib.sha256(Path(bare_loop).read_bytes()).hexdigest()[:16],
            "batch_size": spec.batch_size, "seq_len": spec.seq_len, "results": bare,
            "comparison": bare_loop_comparison(bench["points"], bench["extra_points"], bare, spec)}
    run.bench = build(BenchResult, bench)
    run.environment["device"] = run.bench.card
    run.save(run_dir)
    return run_dir, run


def merge(workers: dict[str, dict], cfg: RunConfig, points: list[PointSpec], extra) -> dict:
    """Workers' raw results to the bench schema: points, extra points, parity, card, matmul rate."""
    rates = [w["matmul_tflops"] for w in workers.values() if w.get("matmul_tflops")]
    peak = max(rates) if rates else None
    arch = next((w["arch"] for w in workers.values() if w.get("arch")), {})
    extra_labels = {p.label for p in extra}
    out_points, out_extra = [], []
    for backend, w in workers.items():
        done = {p["label"]: p for p in w.get("points", [])}
        for spec in points:
            missing = ({"status": "refused", "error": w["refused"]} if w.get("refused") else
                       {"status": "error", "error": "worker ended before this point (see its log)"})
            raw = done.get(spec.label) or {**spec.to_dict(), **missing}
            p = {"backend": backend, **summarize_point(raw, cfg.bench.warmup_steps, arch, peak, w.get("load_s"))}
            (out_extra if spec.label in extra_labels else out_points).append(p)
    card = next((w["card"] for w in workers.values() if w.get("card")), {})
    return {
        "card": card.get("name", ""), "card_info": card, "matmul_tflops": peak,
        "matmul_note": "dense bf16 8192^3 torch.mm, mean of 50 after 5 warm-ups, best of the workers",
        "points": out_points, "extra_points": out_extra,
        "parity": bench_parity(out_points + out_extra, cfg.bench.loss_steps, BENCH_RTOL,
                               why=WHY_4BIT if cfg.model.load_in_4bit else WHY),
        "workers": {b: {k: v for k, v in w.items() if k != "points"} for b, w in workers.items()},
        "settings": {"steps": cfg.bench.steps, "warmup_steps": cfg.bench.warmup_steps,
                     "loss_steps": cfg.bench.loss_steps, "model": cfg.model.name, "lora": asdict(cfg.lora),
                     "load_in_4bit": cfg.model.load_in_4bit,
                     "optim": cfg.train.optim, "lr": cfg.train.lr, "seed": cfg.train.seed,
                     "mfu_convention": "6N + attention (trl.compute_flops_per_token), measured matmul peak"},
    }
