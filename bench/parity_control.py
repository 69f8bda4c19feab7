"""GPU control for the multi-adapter engine's parity: how far do two correct solo runs drift apart in bf16 when
only the LoRA kernels differ?

    python bench/parity_control.py --out control.json        # on a GPU, the device bundle on PYTHONPATH

The seed workload (random Llama-3.2-3B weights, the seed config's 187 cats, 120 steps of the fast plan) trained
alone at a few lrs, three ways over one loaded model, each from the same LoRA start:
- fused: the solo fast plan as `asciitune run` runs it (Unsloth's fused LoRA kernels);
- fused again: the same, to see whether a run repeats itself;
- plain: the same steps with Unsloth's fused LoRA declined (peft's own LoRA forwards, the path the multi-adapter
  engine takes with its stacked adapters).
Per-step relative loss differences of (fused again, plain) against fused are written as JSON with a table last.
Not a pytest: it needs a GPU and Unsloth, and is a measurement, not a check.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Load once, train each lr three ways, write per-step losses and differences."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lrs", default="5e-05,0.0002,0.0008")
    args = p.parse_args(argv)
    from harness import backends

    backend = backends.get("unsloth")
    import torch

    from harness.config import load_plan
    from harness.data import build_dataset, format_example
    from harness.models import resolve
    from harness.train.fast import plan as fast
    from harness.train.fast.engine import Engine
    from harness.train.fast.run import FastRun

    cfg = load_plan("seed", ["model.name=random:llama-3.2-3b", "model.backend=unsloth", "train.plan=fast"]).base
    model, tok, info = backend.load(resolve(cfg.model.name), fast.load_config(cfg))
    backend.for_training(model)
    texts = [format_example(x.text, tok.eos_token) for x in build_dataset(cfg.data).train]
    start = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    def train(lr: float) -> list[float]:
        with torch.no_grad():
            for p, s in zip((p for p in model.parameters() if p.requires_grad), start, strict=True):
                p.copy_(s)
        engine = Engine(model, replace(cfg.train, lr=lr))
        try:
            run = FastRun(engine, tok, texts, replace(cfg.train, lr=lr), max_length=cfg.model.max_seq_length)
            run.warm_up()
            run.run(run.total)
            run.pause()
            return run.losses()
        finally:
            engine.close()

    lrs = [float(x) for x in args.lrs.split(",")]
    doc = {"backend_note": info["backend_note"], "device": info["device"], "lrs": lrs, "losses": {}, "rel_diff": {}}
    t0 = time.perf_counter()
    for lr in lrs:
        doc["losses"][repr(lr)] = {"fused": train(lr), "fused_again": train(lr)}
    from unsloth.models import llama

    llama._decline_fused_lora_for_fsdp(model, "parity control: peft's LoRA forwards")
    for lr in lrs:
        doc["losses"][repr(lr)]["plain"] = train(lr)
    for lr, runs in doc["losses"].items():
        ref = runs["fused"]
        doc["rel_diff"][lr] = {k: {"max": max(d), "mean": sum(d) / len(d), "first_above_0.5pct": next(
            (i + 1 for i, x in enumerate(d) if x > 0.005), None)}
            for k in ("fused_again", "plain") for d in [[abs(a - b) / abs(b) for a, b in zip(runs[k], ref,
                                                                                             strict=True)]]}
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(doc, indent=1))
    print("lr        vs fused: fused again max/mean   plain max/mean   (per-step relative loss difference)")
    for lr, d in doc["rel_diff"].items():
        print(f"{lr:9s} {d['fused_again']['max']:.4%} / {d['fused_again']['mean']:.4%}   "
              f"{d['plain']['max']:.4%} / {d['plain']['mean']:.4%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
