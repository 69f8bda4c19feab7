"""Where the 8-variant sweep's time goes inside one multi-adapter process, on one GPU: imports and load, each
kernel's first call, a step's kernels (torch profiler), graphed steps (MFU), probes against a training forward,
the stacked LoRA product's two forms, and batched sampling eager against CUDA graphs.

    python bench/multi_profile.py --out $OUT/multi-profile.json      # the device bundle on PYTHONPATH

The seed workload at the sweep's 8 lrs on random Llama-3.2-3B weights, through the harness's own engine
(harness.train.multi). A measurement, not a check: every section writes what it saw into --out (rewritten after
each), so a section that fails leaves the others; profiler tables go beside it as text. Prints a table last.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LRS = (5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 4e-4, 6e-4, 8e-4)  # the sweep's (harness.gpu.seed_sweep.SWEEP_LRS)


def importtime(top: int = 30) -> list[dict]:
    """The backend's import in a fresh process under -X importtime: the slowest modules by cumulative time."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import harness.backends.unsloth_backend"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            self_us, cum_us, name = (x.strip() for x in line[len("import time:"):].split("|"))
            rows.append({"module": name, "self_s": int(self_us) / 1e6, "cumulative_s": int(cum_us) / 1e6})
    return sorted(rows, key=lambda r: -r["cumulative_s"])[:top]


def profiled(fn, top: int = 25) -> tuple[object, str]:
    """fn() under cProfile: its result and the top functions by cumulative time."""
    prof = cProfile.Profile()
    out = prof.runcall(fn)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return out, buf.getvalue()


def kernel_table(fn, rows: int = 30) -> str:
    """fn() under the torch profiler (CPU and CUDA): ops by CUDA time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    _sync()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        fn()
        _sync()
    return prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=rows)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeat: int = 1) -> float:
    """Seconds per call of fn, synchronized at both ends."""
    _sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync()
    return (time.perf_counter() - t0) / repeat


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=16, help="steps per timed segment of the engine (of 120)")
    p.add_argument("--config", default="seed", help="a smoke run on the CPU: --config tiny --model tiny")
    p.add_argument("--model", default="random:llama-3.2-3b")
    p.add_argument("--only", default="", help="comma-separated sections to run (load, engine and warm_up are "
                                                "needed by the later ones)")
    args = p.parse_args()
    doc: dict = {"sections": {}}
    tables: dict[str, str] = {}

    def save() -> None:
        args.out.write_text(json.dumps(doc, indent=1))
        args.out.with_suffix(".txt").write_text("\n\n".join(f"== {k}\n{v}" for k, v in tables.items()))

    def section(name: str, fn) -> None:
        if args.only and name not in args.only.split(","):
            return
        t0 = time.perf_counter()
        try:
            doc["sections"][name] = {"seconds": None, **(fn() or {})}
        except Exception as exc:  # noqa: BLE001  (recorded; the next section still runs)
            doc["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
        doc["sections"][name]["seconds"] = round(time.perf_counter() - t0, 3)
        print(f"[profile] {name}: {doc['sections'][name]['seconds']} s", flush=True)
        save()

    t0 = time.perf_counter()
    from harness import backends

    backend = backends.get("unsloth")
    doc["import_backend_s"] = round(time.perf_counter() - t0, 3)
    import torch

    from harness.backends.common import model_folder
    from harness.config import load_plan
    from harness.data import build_dataset, format_example
    from harness.gpu.worker import card_info, measure_matmul_tflops
    from harness.models import resolve
    from harness.train.fast import plan as fast
    from harness.train.multi import run as multi_run
    from harness.train.multi.engine import MultiEngine
    from harness.train.multi.run import MultiRun
    from harness.train.multi.sample import GRAPHS_ENV, sample_variants
    from harness.train.sft import make_probes

    doc["card"], doc["matmul_tflops"] = card_info(), round(measure_matmul_tflops(), 1)
    cfg = load_plan(args.config, [f"model.name={args.model}", "model.backend=unsloth", "train.plan=fast"]).base
    st: dict = {}
    from concurrent.futures import ThreadPoolExecutor

    later = ThreadPoolExecutor(1).submit(importtime)  # a fresh process's import, beside the GPU sections below
    section("weights_on_disk", lambda: {"folder": str(model_folder(resolve(cfg.model.name), cfg))})

    def load():
        (model, tok, info), text = profiled(lambda: backend.load(resolve(cfg.model.name), fast.load_config(cfg)))
        tables["load (cProfile, cumulative)"] = text
        backend.for_training(model)
        st.update(model=model, tok=tok)
        n = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        st["frozen"] = n
        return {"backend_note": info["backend_note"], "frozen_parameters": n}

    section("load", load)
    model, tok = st["model"], st["tok"]
    ds = build_dataset(cfg.data)
    texts = [format_example(x.text, tok.eos_token) for x in ds.train]
    probes = make_probes(ds, cfg, tok.eos_token)
    variants = [(texts, replace(cfg.train, lr=lr)) for lr in LRS]
    flop_per_token = 4 * st["frozen"]  # forward + input gradients of the frozen model: the floor

    def build():
        st["engine"] = engine = MultiEngine(model, len(LRS))
        st["run"] = run = MultiRun(engine, tok, variants, max_length=cfg.model.max_seq_length)
        st["probe"] = run.probe_batches(tok, [[probes.train] * 8, [probes.heldout] * 8])
        return {"micro_batches": sum(len(b) for b in run.batches), "widths": sorted({b[0].shape[-1] for s in
                                                                                     run.batches for b in s}),
                "probe_batches": [list(b[0].shape) for b in st["probe"]]}

    section("engine", build)
    engine, run = st["engine"], st["run"]
    wide = max((b for s in run.batches for b in s), key=lambda b: (b[0].shape[-1] == 768, b[0].shape[-1]))

    # The warm-up first, as a run has it: every kernel's first call (compiles, autotuning) and the captures.
    section("warm_up", lambda: {"seconds_in_run": round(run.warm_up(lambda: engine.capture_probes(st["probe"])), 3),
                                "graphs": sorted(engine.graphs), "probe_graphs": [list(k) for k in
                                                                                  engine.probe_graphs]})

    def sampling():
        with torch.no_grad():  # adapters that differ from each other and from the base: every row's own LoRA shows
            engine.stack.weights.normal_(0.0, 0.02, generator=torch.Generator(device=run.device).manual_seed(0))
        backend.for_inference(model)
        gcfg = replace(cfg.generate, max_new_tokens=64)
        out = {}
        for mode in ("eager", "graphs", "graphs again"):
            os.environ[GRAPHS_ENV] = "0" if mode == "eager" else "1"
            counts = backend.decode_counts(model)
            t = time.perf_counter()
            sampled, how = sample_variants(model, tok, engine, [gcfg] * 8)
            out[mode] = {"seconds": round(time.perf_counter() - t, 3), "how": how,
                         "decode": backend.decode_mode(model, counts),
                         "texts": [[s.text for s in x] for x, _ in sampled]}
        os.environ[GRAPHS_ENV] = "0"
        short = replace(gcfg, max_new_tokens=8)
        tables["eager batched decode, 256 rows x 8 tokens"] = kernel_table(
            lambda: sample_variants(model, tok, engine, [short] * 8))
        os.environ.pop(GRAPHS_ENV)
        backend.for_training(model)
        engine.begin()  # the stack installed again, every adapter at its start, for the sections after this
        out["same_tokens"] = out["eager"]["texts"] == out["graphs"]["texts"] == out["graphs again"]["texts"]
        out["rows_x_tokens"] = [8 * gcfg.n_samples, gcfg.max_new_tokens]
        for mode in ("eager", "graphs", "graphs again"):
            out[mode].pop("texts")
        return out

    section("sampling", sampling)

    def graphed():
        out = {}
        for t, (g, _, _) in sorted(engine.graphs.items()):
            s = timed(g.replay, 10)
            out[str(t)] = {"ms": round(s * 1e3, 2), "tokens": 8 * t,
                           "mfu_padded": round(flop_per_token * 8 * t / s / (doc["matmul_tflops"] * 1e12), 3)}
        if engine.end_graph is not None:
            out["end_step_ms"] = round(timed(engine.end_graph.replay, 10) * 1e3, 3)
        engine.zero_grads()
        return out

    section("graph_replays", graphed)

    def probes_vs_forward():
        sums = torch.zeros(2, 8, device=run.device)
        point = timed(lambda: engine.probe(st["probe"], sums), 5)
        tokens = sum(b[0].numel() for b in st["probe"])
        real = sum(int((b[2] != -100).sum()) for b in st["probe"])
        old_layout = replace_probe_tokens(multi_run, 8 * 768, lambda: run.probe_batches(
            tok, [[probes.train] * 8, [probes.heldout] * 8]))
        engine.capture_probes(old_layout)
        old = timed(lambda: engine.probe(old_layout, sums), 5)
        fwd_graphs = engine.probe_graphs.get((8, 768))
        fwd = timed(fwd_graphs[0].replay, 10) if fwd_graphs else None
        tables["probe point (eager, batched layout)"] = kernel_table(
            lambda: [engine.forward_losses(*b[:5]) for b in st["probe"]])
        return {"point_s": round(point, 4), "tokens_padded": tokens, "targets": real,
                "tokens_per_s": round(tokens / point), "old_layout_point_s": round(old, 4),
                "old_layout_forwards": len(old_layout), "train_row_forward_tokens_per_s":
                    round(8 * 768 / fwd) if fwd else None}

    def eager_step():
        fwd_bwd = timed(lambda: engine.forward_backward(*wide), 3)
        fwd = timed(lambda: engine.forward_losses(*wide), 3)
        tables["one eager [8, 768] forward+backward"] = kernel_table(lambda: engine.forward_backward(*wide))
        engine.zero_grads()
        return {"eager_fwd_bwd_s": round(fwd_bwd, 4), "eager_fwd_s": round(fwd, 4)}

    section("eager_step", eager_step)
    section("probes", probes_vs_forward)

    def steps():
        out = {}
        for label, form in (("separate", "separate"), ("fused-add", "fused-add"), ("separate again", "separate")):
            engine.stack.form = form
            engine.graphs.clear()
            engine.end_graph = None
            r = MultiRun(engine, tok, variants, max_length=cfg.model.max_seq_length, limit=args.steps)
            r.warm_up()
            r.run(r.total)
            r.pause()
            tokens = r.all_real_tokens()
            out[label] = {"steps": r.done, "seconds": round(r.train_s, 3), "warmup_s": round(r.warmup_s, 3),
                          "real_tokens": tokens, "mfu": round(flop_per_token * tokens / max(r.train_s, 1e-9) /
                                                              (doc["matmul_tflops"] * 1e12), 4)
                          if doc["matmul_tflops"] else None,
                          "losses": [r.losses(k) for k in range(8)]}
        for label in ("fused-add", "separate again"):
            a, b = out[label]["losses"], out["separate"]["losses"]
            out[label]["max_rel_diff_vs_separate"] = max(abs(x - y) / max(abs(y), 1e-12) for p, q in zip(a, b)
                                                         for x, y in zip(p, q))
        engine.stack.form = "separate"
        return out

    section("steps", steps)

    section("importtime", lambda: {"slowest": later.result(timeout=300)})
    doc["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 2) if torch.cuda.is_available() \
        else None
    save()
    s = doc["sections"]
    for name, v in s.items():
        brief = {k: v[k] for k in list(v)[:6] if k not in ("slowest", "losses")}
        print(f"{name:16s} {json.dumps(brief)[:230]}")
    return 0


def replace_probe_tokens(module, tokens: int, make):
    """make() with the module's PROBE_TOKENS set to tokens (one [K, T] row per adapter a forward: the old layout)."""
    before = module.PROBE_TOKENS
    module.PROBE_TOKENS = tokens
    try:
        return make()
    finally:
        module.PROBE_TOKENS = before


if __name__ == "__main__":
    sys.exit(main())
