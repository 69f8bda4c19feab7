"""Unsloth's CUDA-graph decode against its eager decode, through the harness's own sampling, on one GPU.

    python bench/decode_graphs.py --out $OUT/decode-graphs.json          # seed config, random Llama-3.2-3B

Why: `asciitune run` sets UNSLOTH_DECODE_CUDA_GRAPHS=1 by default (harness/backends/unsloth_backend.py),
which Unsloth itself turns on only inside RL trainers. This measures what that buys and checks that it
changes nothing: the seed config's sampling (32 samples x 512 new tokens, temperature 0.8, top-p 0.95)
drawn twice with each setting from one loaded model whose LoRA B matrices are random (so the adapter path
counts), in this order: eager, graphs (captures), graphs again (replays only), eager again. The same seed
must give the same tokens with either setting; random weights never emit EOS, so every sample runs all
512 tokens (the worst case). Prints a table last and writes the JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="seed", help="config whose model and [generate] settings are used")
    p.add_argument("--model", default="random:llama-3.2-3b", help="model name (default: random 3B weights)")
    p.add_argument("--out", type=Path, required=True, help="JSON result")
    args = p.parse_args()

    from harness import backends  # the backend first: Unsloth must be imported before transformers

    backend = backends.get("unsloth")
    import torch

    from harness.config import load_plan
    from harness.models import resolve
    from harness.train.generate import generate_samples

    if not torch.cuda.is_available():
        print("needs an NVIDIA GPU: Unsloth's decode graphs are CUDA graphs", file=sys.stderr)
        return 2
    cfg = load_plan(args.config, [f"model.name={args.model}", "model.backend=unsloth"]).base
    t0 = time.perf_counter()
    model, tok, info = backend.load(resolve(cfg.model.name), cfg)
    load_s = time.perf_counter() - t0
    gen = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # fresh LoRA B is zero: give the adapter a say in every token
                param.copy_((torch.randn(param.shape, generator=gen) * 0.02).to(param.dtype))
    backend.for_inference(model)
    runs = []
    for setting in ("0", "1", "1", "0"):
        os.environ["UNSLOTH_DECODE_CUDA_GRAPHS"] = setting  # read by Unsloth once per generate() call
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        counts = backend.decode_counts(model)
        samples, stats = generate_samples(model, tok, cfg.generate)
        runs.append({"graphs": setting == "1", "seconds": stats.seconds, "new_tokens": stats.new_tokens,
                     "tokens_per_s": stats.tokens_per_s, "decode": backend.decode_mode(model, counts),
                     "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
                     "texts": [s.text for s in samples]})
        print(f"graphs={setting}: {stats.seconds:.2f} s, {stats.tokens_per_s:.0f} tokens/s, {runs[-1]['decode']}",
              flush=True)
    eager, graphs = runs[0]["texts"], runs[1]["texts"]
    same = sum(a == b for a, b in zip(eager, graphs))
    doc = {"card": torch.cuda.get_device_name(0), "model": cfg.model.name, "backend_note": info["backend_note"],
           "load_seconds": round(load_s, 1), "generate": asdict(cfg.generate),
           "same_samples": f"{same}/{len(eager)}", "repeat_same": runs[2]["texts"] == graphs
           and runs[3]["texts"] == eager, "runs": [{k: v for k, v in r.items() if k != "texts"} for r in runs]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(f"\n{'run':<22}{'seconds':>9}{'tokens/s':>10}{'peak GiB':>10}")
    for r, label in zip(doc["runs"], ("eager", "graphs (capture)", "graphs (replay)", "eager again")):
        print(f"{label:<22}{r['seconds']:>9.2f}{r['tokens_per_s']:>10.0f}{r['peak_reserved_bytes'] / 2**30:>10.1f}")
    print(f"same samples with and without graphs: {doc['same_samples']}; repeats identical: {doc['repeat_same']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
