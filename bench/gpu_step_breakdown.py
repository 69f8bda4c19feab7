"""Where a harness training step spends time beyond the bare reference loop (GPU; one backend per process).

    python3 bench/gpu_step_breakdown.py --backend unsloth --model random:llama-3.2-3b --bs 2 --seq 512

Loads the model through the harness backend (the weights `asciitune bench` uses), then times
one optimizer step in variants that add the harness's differences from `bare_loop.py` one
at a time, interleaved round by round so that drift hits every variant alike:

    bare        model(input_ids, labels=input_ids) -> backward -> torch AdamW -> zero_grad
    +mask       the same with an attention_mask (TRL's collator always sends one)
    +trl_loss   TRL's fused LM head (log-probs, entropy, top-1 in Triton chunks) and the three
                metric .item() calls SFTTrainer.compute_loss makes after every forward
    +clip       Trainer's NaN/Inf check of the step loss and clip_grad_norm_(1.0)
    +adamw_8bit bitsandbytes 8-bit AdamW (what train.optim=auto picks on a GPU) instead of torch's

The full SFTTrainer step is what `asciitune bench` measures; compare its b2-s512 points with
the last two rows. Each row: median wall seconds per step (synchronized), its IQR, and the
median CPU seconds of this process per step (CPU ~ wall means the step is launch-bound).
Prints one compact JSON document last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("bare", "+mask", "+trl_loss", "+clip", "+adamw_8bit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["unsloth", "peft"], required=True)
    ap.add_argument("--model", default="random:llama-3.2-3b")
    ap.add_argument("--config", default="seed")
    ap.add_argument("--bs", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="steps per variant per round (the first is dropped)")
    a = ap.parse_args()

    from harness import backends

    backend = backends.get(a.backend)  # before transformers
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from harness.config import load_plan
    from harness.models import resolve

    cfg = load_plan(a.config, [f'model.name="{a.model}"', f"model.backend={a.backend}"]).base
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model, tok, info = backend.load(resolve(cfg.model.name), cfg)
    backend.for_training(model)
    base = model.get_base_model()
    add_fused_lm_head(base, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer.__init__ does
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    ids = torch.randint(32, 127, (a.bs, a.seq), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    opts = {"torch": torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)}
    try:
        import bitsandbytes as bnb

        opts["8bit"] = bnb.optim.AdamW8bit(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    except Exception as exc:  # no bitsandbytes build for this device: the last row is left out
        print(f"adamw_8bit unavailable: {exc}", file=sys.stderr)

    def step(variant: str) -> None:
        level = VARIANTS.index(variant)
        kw = {"attention_mask": mask} if level >= 1 else {}
        if level >= 2:
            out = model(input_ids=ids, labels=ids, fused_lm_head=True, use_cache=False, **kw)
            loss = -out.log_probs.sum() / out.label_mask.sum().clamp(min=1)
            n = out.label_mask.sum()
            (out.entropy.detach().sum() / n).item(), (out.is_top1.sum() / n).item(), mask.sum().item()
        else:
            loss = model(input_ids=ids, labels=ids, **kw).loss
        loss.backward()
        if level >= 3:
            bool(torch.isnan(loss.detach()) or torch.isinf(loss.detach()))
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt = opts["8bit" if level >= 4 else "torch"]
        opt.step()
        opt.zero_grad(set_to_none=True)

    variants = [v for v in VARIANTS if v != "+adamw_8bit" or "8bit" in opts]
    for v in variants:  # compile and allocate once per variant before timing
        for _ in range(2):
            step(v)
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(a.rounds):
        for v in variants:
            for i in range(a.steps):
                sync()
                t, c = time.perf_counter(), time.process_time()
                step(v)
                sync()
                if i:  # the first step after switching variant pays for the switch
                    wall[v].append(time.perf_counter() - t)
                    cpu[v].append(time.process_time() - c)
    rows = []
    for v in variants:
        q1, _, q3 = statistics.quantiles(wall[v], n=4, method="inclusive")
        rows.append({"variant": v, "median_step_s": statistics.median(wall[v]), "iqr_s": q3 - q1,
                     "median_cpu_s": statistics.median(cpu[v]), "n": len(wall[v])})
    ref = rows[0]["median_step_s"]
    for r in rows:
        r["vs_bare"] = r["median_step_s"] / ref
        print(f"{a.backend:8} {r['variant']:12} {r['median_step_s']:.4f} s  IQR {r['iqr_s']:.4f}  "
              f"cpu {r['median_cpu_s']:.4f} s  x{r['vs_bare']:.3f}")
    card = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(json.dumps({"backend": a.backend, "card": card, "backend_note": info["backend_note"], "bs": a.bs,
                      "seq": a.seq, "rounds": a.rounds, "steps_per_round": a.steps, "torch": torch.__version__,
                      "rows": rows}, separators=(",", ":")))


if __name__ == "__main__":
    main()
