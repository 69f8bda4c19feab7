"""Child process of tests/test_multi_gpu.py: the multi-adapter engine against solo fast-plan runs through one
backend (one backend per process: Unsloth patches transformers), on a small random Llama in the backend's GPU
dtype. Writes one JSON document: per-step losses of K=3 variants trained together (CUDA graphs) and alone
(the solo engine's graphs), and the first generate steps' scores of K adapters batched in one call against
each adapter alone.

    python tests/gpu_multi_child.py --backend unsloth --out /tmp/multi-unsloth.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# A Llama small enough for seconds, wide enough for every kernel's tile sizes (head_dim 64); the tiny model's
# vocabulary and tokenizer (SmolLM2's, or ASCIITUNE_TOKENIZER on a machine without the hub).
ARCH = dict(model_type="llama", vocab_size=49152, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
            tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
LRS_STEPS = ((1e-3, 8, 1), (3e-3, 6, 2), (2e-3, 8, 3))  # lr, max_steps, seed: three variants that differ


def _rel(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b)) if a and len(a) == len(b) else float("inf")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=["unsloth", "peft"], required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    from harness import backends

    backend = backends.get(args.backend)  # first: Unsloth must patch before transformers loads
    import torch

    from harness.config import load_plan
    from harness.data import build_dataset, format_example
    from harness.models import resolve
    from harness.train.fast import plan as fast
    from harness.train.fast.engine import Engine
    from harness.train.fast.run import FastRun
    from harness.train.multi.engine import MultiEngine
    from harness.train.multi.run import MultiRun
    from harness.train.multi.sample import GRAPHS_ENV, sample_variants

    folder = Path(tempfile.mkdtemp(prefix="asciitune-multi-gpu-"))
    (folder / "config.json").write_text(json.dumps(ARCH))
    cfg = load_plan("tiny", [f'model.name="random:{folder}"', f"model.backend={args.backend}", "train.plan=fast"]).base
    model, tok, info = backend.load(resolve(cfg.model.name), fast.load_config(cfg))
    backend.for_training(model)
    ds = build_dataset(cfg.data)
    texts = [format_example(x.text, tok.eos_token) for x in ds.train]
    variants = [(texts, replace(cfg.train, lr=lr, max_steps=steps, seed=seed)) for lr, steps, seed in LRS_STEPS]
    doc: dict = {"backend": args.backend, "backend_note": info["backend_note"], "dtype": info["dtype"]}

    t0 = time.perf_counter()
    multi = MultiEngine(model, 3, micro_tokens=256)
    run = MultiRun(multi, tok, variants, max_length=cfg.model.max_seq_length)
    run.warm_up()
    run.run(run.total)
    doc["multi"] = {"mode": multi.mode, "graphs": sorted(multi.graphs), "seconds": round(time.perf_counter() - t0, 2),
                    "losses": [run.losses(k) for k in range(3)], "rows": [run.stats(k).rows for k in range(3)]}
    probe = run.probe_batches(tok, [[texts[:8]] * 3])
    dev = next(model.parameters()).device  # a GPU where this runs for real; the CPU for a smoke run
    sums = torch.zeros(1, 3, device=dev)
    multi.probe(probe, sums)
    doc["multi"]["probe"] = sums[0].tolist()
    doc["multi"]["probe_mode"] = "graphs" if multi.probe_graphs else f"eager {multi.probe_eager}"
    run.pause()

    # Sampling: K adapters in one generate call (row block k on adapter k) against each adapter alone; greedy,
    # scores of the first steps (bf16 kernels differ with the batch, so tokens may part on near-ties later).
    backend.for_inference(model)
    ids = tok(cfg.generate.prompt, return_tensors="pt")["input_ids"].to(dev)
    kw = dict(max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True,
              pad_token_id=tok.pad_token_id, eos_token_id=None)
    multi.stack.install()
    if args.backend == "unsloth":
        from unsloth.kernels import utils as unsloth_utils

        doc["unsloth_sees_multiple_adapters"] = unsloth_utils._has_multiple_active_adapters(multi.stack.layers[0])
    rows = ids.repeat(3 * 2, 1)
    with torch.no_grad():
        batched = model.generate(input_ids=rows, attention_mask=torch.ones_like(rows), **kw)
    multi.stack.uninstall()
    gen = []
    for k in range(3):
        multi.stack.export(k)
        with torch.no_grad():
            alone = model.generate(input_ids=rows[:2], attention_mask=torch.ones_like(rows[:2]), **kw)
        same_tokens = torch.equal(batched.sequences[2 * k:2 * k + 2], alone.sequences)
        per_step = []
        for s, (b, a) in enumerate(zip(batched.scores, alone.scores)):
            b = b[2 * k:2 * k + 2].float()
            a = a.float()
            per_step.append(round(((b - a).abs().max() / a.abs().max().clamp(min=1e-6)).item(), 6))
            if not torch.equal(batched.sequences[2 * k:2 * k + 2, : ids.shape[1] + s + 1],
                               alone.sequences[:, : ids.shape[1] + s + 1]):
                break  # later steps read different tokens: their scores are not comparable
        gen.append({"same_tokens": same_tokens, "score_rel_diff_per_step": per_step})
    doc["generate"] = gen
    doc["generate_decode"] = backend.decode_mode(model)

    # Seeded sampling of the three adapters in one batched call, the decode eager and then replayed as CUDA graphs
    # (Unsloth's, over the stacked layers): the same tokens, since a replay runs the eager step's kernels.
    gcfg = replace(cfg.generate, n_samples=4, batch_size=4, max_new_tokens=24, temperature=0.8, top_p=0.95)
    draws = {}
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for mode in ("eager", "graphs"):
        os.environ[GRAPHS_ENV] = "0" if mode == "eager" else "1"
        counts = backend.decode_counts(model)
        sync()
        t0 = time.perf_counter()
        sampled, how = sample_variants(model, tok, multi, [gcfg] * 3)
        sync()
        draws[mode] = {"texts": [[s.text for s in x] for x, _ in sampled], "how": how,
                       "decode": backend.decode_mode(model, counts), "seconds": round(time.perf_counter() - t0, 3)}
    os.environ.pop(GRAPHS_ENV)
    doc["decode_graphs"] = {"eager": draws["eager"]["decode"], "graphs": draws["graphs"]["decode"],
                            "seconds": {m: d["seconds"] for m, d in draws.items()},
                            "how": draws["graphs"]["how"], "same_tokens": draws["eager"]["texts"] ==
                            draws["graphs"]["texts"], "adapters_differ": len({tuple(x) for x in
                                                                               draws["graphs"]["texts"]}) == 3}

    # The same engine trains the same variants again after sampling (a sweep's next group): its graphs replay.
    backend.for_training(model)
    again = MultiRun(multi, tok, variants, max_length=cfg.model.max_seq_length)
    again.warm_up()
    again.run(again.total)
    again.pause()
    doc["multi"]["again_losses"] = [again.losses(k) for k in range(3)]
    doc["again_max_rel_diff_per_variant"] = [_rel(a, m) for a, m in zip(doc["multi"]["again_losses"],
                                                                         doc["multi"]["losses"])]
    multi.close()

    t0 = time.perf_counter()
    solo = Engine(model, cfg.train, micro_tokens=256)
    doc["solo"] = {"mode": solo.mode, "losses": []}
    for texts_k, train in variants:
        r = FastRun(solo, tok, texts_k, train, max_length=cfg.model.max_seq_length)
        r.warm_up()
        r.run(r.total)
        r.pause()
        doc["solo"]["losses"].append(r.losses())
    doc["solo"]["seconds"] = round(time.perf_counter() - t0, 2)
    solo.close()
    doc["max_rel_diff_per_variant"] = [_rel(m, s) for m, s in zip(doc["multi"]["losses"], doc["solo"]["losses"])]
    args.out.write_text(json.dumps(doc, indent=1))
    print(json.dumps({k: doc[k] for k in ("backend", "max_rel_diff_per_variant")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
