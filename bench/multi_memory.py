"""What one multi-adapter engine process holds on the GPU as its adapters grow: peak memory and time per phase for
K = 1, 4, 8 (or --ks) on the seed workload, the numbers harness.train.multi.memory plans engine processes from.

    python bench/multi_memory.py --out $OUT/multi-memory.json         # the device bundle on PYTHONPATH

One process, one load of random Llama-3.2-3B weights through the unsloth backend; for each K in turn a fresh
MultiEngine over K copies of the seed workload (the sweep's lrs): the warm-up (every row length's graph and the
probes' graphs), --steps optimizer steps, one probe point, then sampling with the seed config's generate settings
(32 samples x 512 tokens per adapter, batched, graphed decode), and for the largest K the same sampling eager at
--eager-tokens tokens against graphs at as many. Peak allocated and reserved bytes are read after each phase
(the CUDA peak counters reset per K); the engine is closed and the cache emptied between Ks. A measurement, not a
check: the document is rewritten after each K, so a K that runs out of memory leaves the others.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LRS = (5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 4e-4, 6e-4, 8e-4)  # the sweep's (harness.gpu.seed_sweep.SWEEP_LRS)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ks", default="1,4,8")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--eager-tokens", type=int, default=128, help="new tokens for the eager-vs-graphs sampling")
    p.add_argument("--config", default="seed", help="a smoke run on the CPU: --config tiny --model tiny")
    p.add_argument("--model", default="random:llama-3.2-3b")
    args = p.parse_args()
    t_import = time.perf_counter()
    from harness import backends

    backend = backends.get("unsloth" if args.config == "seed" else "peft")
    import torch

    from harness.config import load_plan
    from harness.data import build_dataset, format_example
    from harness.gpu.worker import card_info
    from harness.models import resolve
    from harness.train.fast import plan as fast
    from harness.train.multi.engine import MultiEngine
    from harness.train.multi.run import MultiRun
    from harness.train.multi.sample import GRAPHS_ENV, sample_variants
    from harness.train.sft import make_probes

    cuda = torch.cuda.is_available()
    doc: dict = {"import_backend_s": round(time.perf_counter() - t_import, 3), "card": card_info(), "ks": {}}

    def mem() -> dict:
        if not cuda:
            return {}
        free, total = torch.cuda.mem_get_info()
        return {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved(),
                "peak_allocated": torch.cuda.max_memory_allocated(), "peak_reserved": torch.cuda.max_memory_reserved(),
                "free": free, "total": total}

    def save() -> None:
        args.out.write_text(json.dumps(doc, indent=1))

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    cfg = load_plan(args.config, [f"model.name={args.model}", f"model.backend={backend.NAME}",
                                  "train.plan=fast"]).base
    doc["memory_before_load"] = mem()
    t0 = time.perf_counter()
    model, tok, info = backend.load(resolve(cfg.model.name), fast.load_config(cfg))
    backend.for_training(model)
    doc["load_s"], doc["memory_after_load"], doc["backend_note"] = round(time.perf_counter() - t0, 3), mem(), \
        info["backend_note"]
    ds = build_dataset(cfg.data)
    texts = [format_example(x.text, tok.eos_token) for x in ds.train]
    probes = make_probes(ds, cfg, tok.eos_token)
    gcfg = cfg.generate
    save()
    ks = [int(x) for x in args.ks.split(",")]
    for k in ks:
        rec: dict = {}
        doc["ks"][str(k)] = rec
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            variants = [(texts, replace(cfg.train, lr=LRS[i % len(LRS)])) for i in range(k)]
            engine = MultiEngine(model, k)
            run = MultiRun(engine, tok, variants, max_length=cfg.model.max_seq_length)
            batches = run.probe_batches(tok, [[probes.train] * k, [probes.heldout] * k])
            rec["stack_bytes"] = 4 * engine.stack.weights.numel() * engine.stack.weights.element_size()
            rec["row_cap"], rec["after_build"] = engine.micro_tokens, mem()
            rec["warmup_s"] = round(run.warm_up(lambda e=engine, b=batches: e.capture_probes(b)), 3)
            rec["graphs"], rec["after_warmup"] = sorted(engine.graphs), mem()
            rec["steps_s"] = round(run.run(args.steps), 3)
            rec["steps"], rec["real_tokens"] = run.done, run.all_real_tokens()
            rec["after_steps"] = mem()
            sums = torch.zeros(2, k, device=run.device)
            sync()
            t0 = time.perf_counter()
            engine.probe(batches, sums)
            sync()
            rec["probe_point_s"], rec["after_probe"] = round(time.perf_counter() - t0, 3), mem()
            if k == max(ks) and cuda:  # where a step's device time goes: the widest micro-batch, eager, profiled
                from torch.profiler import ProfilerActivity, profile

                wide = max((b for step in run.batches for b in step), key=lambda b: b[0].shape[-1] * (
                    b[0].shape[-1] <= engine.micro_tokens))
                engine.forward_backward(*wide)
                sync()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    engine.forward_backward(*wide)
                    sync()
                engine.zero_grads()
                rec["profiled_batch"] = list(wide[0].shape)
                args.out.with_suffix(".txt").write_text(prof.key_averages().table(sort_by="cuda_time_total",
                                                                                  row_limit=45))
            run.pause()
            backend.for_inference(model)
            modes = [("graphs", gcfg)]
            if k == max(ks):
                short = replace(gcfg, max_new_tokens=args.eager_tokens)
                modes += [("graphs, short", short), ("eager, short", short)]
            rec["sampling"] = {}
            for mode, g in modes:
                os.environ[GRAPHS_ENV] = "0" if mode.startswith("eager") else "1"
                counts = backend.decode_counts(model)
                sync()
                t0 = time.perf_counter()
                sampled, how = sample_variants(model, tok, engine, [g] * k)
                sync()
                rec["sampling"][mode] = {"seconds": round(time.perf_counter() - t0, 3), "rows": k * g.n_samples,
                                         "new_tokens": g.max_new_tokens, "how": how,
                                         "decode": backend.decode_mode(model, counts), "after": mem(),
                                         "failed": [str(x)[:200] for x in sampled if isinstance(x, Exception)]}
                save()
            os.environ.pop(GRAPHS_ENV, None)
            backend.for_training(model)
            engine.close()
        except Exception as exc:  # noqa: BLE001  (recorded: an out-of-memory K is a measurement too)
            rec["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
            rec["at_error"] = mem()
        engine = run = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        rec["after_close"] = mem()
        save()
        print(f"[memory] K={k}: " + json.dumps({x: rec.get(x) for x in ("warmup_s", "steps_s", "probe_point_s",
                                                                        "error")}), flush=True)
    gib = 2 ** 30
    for k, rec in doc["ks"].items():
        peak = max([rec.get(p, {}).get("peak_reserved", 0) for p in ("after_warmup", "after_steps", "after_probe")] +
                   [s["after"].get("peak_reserved", 0) for s in rec.get("sampling", {}).values()] + [0])
        print(f"K={k:>3} peak reserved {peak / gib:6.2f} GiB  train peak "
              f"{rec.get('after_probe', {}).get('peak_reserved', 0) / gib:6.2f}  warm-up {rec.get('warmup_s')} s  "
              f"steps {rec.get('steps_s')} s  sampling "
              f"{ {m: s['seconds'] for m, s in rec.get('sampling', {}).items()} }  {rec.get('error', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
