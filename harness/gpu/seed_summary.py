"""The seed-workload document from the arms' raw records: rows, parity and targets (pure, no torch).

Row fields: name, backend, plan, train_seconds (optimizer steps only),
warmup_seconds (the fast plan's warm-up and graph captures; for the seed plan its first step, which
carries Unsloth's compiles and is also inside train_seconds), tokens_per_s (real tokens over
train_seconds), peak_reserved_bytes (from before the load, weights included) and mfu. MFU uses the
convention of harness.gpu.bench (6N + attention per token, trl.compute_flops_per_token, at the mean
real sequence length) over the card's bf16 matmul rate measured in the same call; LoRA does less real
work than 6N (no weight gradients for frozen weights), so this MFU overstates the hardware's share.
"""
from __future__ import annotations

from collections.abc import Callable

from harness.gpu.parity import BENCH_RTOL, compare_losses

PARITY_RTOL = 0.005  # fast plan vs seed plan, per step, over the whole workload
BACKEND_RTOL = BENCH_RTOL  # the seed plan on another backend: its kernels in bf16 (harness.gpu.parity)
# The two 4-bit arms dequantize the same NF4 weights and compute in bf16 with other kernels: the
# backends' own bound. Against the bf16 seed plan the base itself differs: NF4 rounds every frozen
# weight (~10% relative per weight for normal weights), so the 4-bit model is a nearby model, not the
# same one; 5% per step bounds that gap and still catches a broken 4-bit path (a wrong scale or mask).
QLORA_RTOL, QLORA_VS_BF16_RTOL = BACKEND_RTOL, 0.05
REFERENCE = "seed-unsloth"


def arm_row(rec: dict, peak_tflops: float | None, fpt: Callable[[dict, float], float] | None) -> dict:
    """One arm's row: the issue's fields, then status, steps and how partial it is."""
    steps, planned = rec.get("steps") or 0, rec.get("steps_planned") or 0
    train_s = rec.get("train_seconds")
    if train_s is None and rec.get("step_s"):  # a seed-plan arm stopped at its cap: the steps it finished
        train_s = round(sum(rec["step_s"]), 4)
    tokens = rec.get("tokens") if rec.get("tokens") is not None else sum(rec.get("tokens_per_step") or [])
    warm = rec.get("warmup_seconds")
    if warm is None and rec.get("step_s"):
        warm = rec["step_s"][0]
    row = {"name": rec.get("name"), "backend": rec.get("backend"), "plan": rec.get("plan"),
           "load_in_4bit": bool(rec.get("load_in_4bit")), "train_seconds": train_s, "warmup_seconds": warm,
           "tokens_per_s": round(tokens / train_s, 1) if tokens and train_s else None,
           "peak_reserved_bytes": rec.get("peak_reserved_bytes"), "mfu": None, "status": rec.get("status"),
           "steps": steps, "steps_planned": planned, "partial": bool(planned and steps < planned),
           "tokens": tokens, "load_seconds": rec.get("load_s"), "optimizer": rec.get("optimizer"),
           "plan_reason": rec.get("plan_reason"), "mode": rec.get("mode")}
    if row["partial"] and rec.get("step_s") and steps > 1:
        rest = rec["step_s"][1:]
        row["train_seconds_extrapolated"] = round(rec["step_s"][0] + sum(rest) / len(rest) * (planned - 1), 1)
        row["extrapolation"] = (f"first step + mean of steps 2-{steps} x {planned - 1}: an extrapolation from "
                                f"{steps} measured steps, not a measurement")
    if rec.get("padded_tokens") and tokens:
        row["bucket_padding_fraction"] = round(1 - tokens / rec["padded_tokens"], 4)
    if rec.get("buckets") is not None:
        row["graphs"] = len(rec["buckets"])
    seqs = rec.get("sequences")
    if fpt and peak_tflops and row["tokens_per_s"] and seqs and rec.get("arch"):
        flops = fpt(rec["arch"], tokens / seqs)
        row["mfu"] = row["tokens_per_s"] * flops / (peak_tflops * 1e12)
    return row


def solo_row(rec: dict, lrs: list[float]) -> dict:
    """sweep-solo's arm row: the sweep's lrs trained alone one after another; train_seconds sums their steps, status
    "ok" only when every lr finished (a capped arm keeps the lrs it finished, counted in variants_done)."""
    done = len(rec.get("sweep_losses") or {})
    status = rec.get("status")
    if status == "ok" and done < len(lrs):
        status = f"{done} of {len(lrs)} lrs"
    secs = rec.get("sweep_train_seconds") or {}
    warm = rec.get("sweep_warmup_seconds") or {}
    return {"name": rec.get("name", "sweep-solo"), "backend": rec.get("backend"), "plan": "fast",
            "load_in_4bit": False, "train_seconds": round(sum(secs.values()), 4) if secs else None,
            "warmup_seconds": round(sum(warm.values()), 3) if warm else None, "tokens_per_s": None,
            "peak_reserved_bytes": rec.get("peak_reserved_bytes"), "mfu": None, "status": status,
            "steps": rec.get("steps") or 0, "steps_planned": rec.get("steps") or 0, "partial": done < len(lrs),
            "variants_done": done, "variants_planned": len(lrs), "load_seconds": rec.get("load_s"),
            "plan_reason": rec.get("plan_reason"), "mode": rec.get("mode"), "lora_forward": rec.get("lora_forward")}


def solo_parity(rec: dict) -> dict:
    """sweep-solo's own parity, with or without a sweep beside it: per lr, a second run of the same lr against the
    first (the reference's spread, which bounds the sweep's parity) and Unsloth's fused LoRA kernels against the
    plain forwards, over every step."""
    plain, again, fused = (rec.get(k) or {} for k in ("sweep_losses", "sweep_rerun_losses", "sweep_fused_losses"))

    def diff(a, b):
        return compare_losses(a, b, None, 1.0)["max_rel_diff"] if a and b else None

    per = {lr: {"rerun_spread": diff(again.get(lr), ref), "fused_vs_plain": diff(fused.get(lr), ref),
                "steps": len(ref)} for lr, ref in plain.items()}
    spreads = [v["rerun_spread"] for v in per.values() if v["rerun_spread"] is not None]
    return {"per_lr": per, "max_rerun_spread": max(spreads) if spreads else None,
            "what": "each lr trained alone twice with the engine's LoRA forwards (rerun_spread: max relative "
                    "difference per step between the two runs) and once with Unsloth's fused kernels"}


def full_seconds(row: dict) -> float | None:
    """Train seconds for the whole workload: measured, or the labelled extrapolation for a partial seed arm."""
    return row.get("train_seconds_extrapolated") if row.get("partial") else row.get("train_seconds")


def _cmp(other: list[float], ref: list[float], rtol: float) -> dict:
    out = compare_losses(other, ref, None, rtol)
    return {k: out[k] for k in ("steps_compared", "max_rel_diff", "mean_rel_diff", "worst_step", "ok")} | \
        {"tolerance": rtol}


def parity(raw: dict[str, dict]) -> dict:
    """Per-step losses: bf16 fast arms vs the seed plan on Unsloth (0.5%), the other checks beside it."""
    ref = (raw.get(REFERENCE) or {}).get("losses") or []
    arms, qlora = {}, {}
    for name, rec in raw.items():
        losses = rec.get("losses") or []
        if name == REFERENCE or not losses or not ref:
            continue
        if rec.get("load_in_4bit"):
            qlora[name] = {"vs_bf16_seed": _cmp(losses, ref, QLORA_VS_BF16_RTOL)}
        elif rec.get("plan") == "fast":
            arms[name] = _cmp(losses, ref, PARITY_RTOL)
        else:
            arms[name] = {**_cmp(losses, ref, BACKEND_RTOL), "note": "seed plan on another backend: backend bound"}
    q = [raw.get(n, {}).get("losses") or [] for n in ("qlora-fast-unsloth", "qlora-fast-peft")]
    if all(q):
        qlora["unsloth_vs_peft"] = _cmp(q[0], q[1], QLORA_RTOL)
    fast = [v for n, v in arms.items() if raw[n].get("plan") == "fast" and v["max_rel_diff"] is not None]
    steps_ref = len(ref)
    return {"max_rel_diff": max((v["max_rel_diff"] for v in fast), default=None), "tolerance": PARITY_RTOL,
            "reference": REFERENCE, "reference_steps": steps_ref,
            "reference_complete": bool(ref) and steps_ref == (raw.get(REFERENCE) or {}).get("steps_planned"),
            "ok": bool(fast) and all(v["ok"] for v in fast), "arms": arms,
            "qlora": {**qlora, "tolerance_between_4bit_arms": QLORA_RTOL, "tolerance_vs_bf16": QLORA_VS_BF16_RTOL,
                      "why": "same NF4 weights on both backends (bf16 compute, other kernels): the backend bound; "
                             "vs the bf16 base, NF4 rounding makes a nearby model, hence 5%"}}


def targets(rows: dict[str, dict], par: dict, sweep: dict | None, sweep_32: dict | None = None) -> dict:
    """Issues 12's and 20's targets, each with its value, bound and whether it was met (None when not measured)."""
    fast, seed = rows.get("fast-unsloth", {}), rows.get(REFERENCE, {})
    fast_s, seed_s = fast.get("train_seconds"), full_seconds(seed)
    speed = seed_s / fast_s if fast_s and seed_s else None
    peak_f, peak_s = fast.get("peak_reserved_bytes"), seed.get("peak_reserved_bytes")
    end_to_end = (fast_s + (fast.get("warmup_seconds") or 0)) if fast_s else None
    wall = (sweep or {}).get("wall_seconds") if (sweep or {}).get("done") == (sweep or {}).get("variants") else None

    def t(value, bound, ok, note=""):
        return {"value": value, "bound": bound, "met": ok, **({"note": note} if note else {})}

    return {
        "fast_steps_seconds": t(fast_s, 10.0, fast_s <= 10.0 if fast_s else None),
        "speedup_vs_seed_unsloth": t(round(speed, 2) if speed else None, 10.0, speed >= 10 if speed else None,
                                     "seed seconds extrapolated from a partial run" if seed.get("partial") else ""),
        "fast_peak_vs_seed_peak": t(round(peak_f / peak_s, 3) if peak_f and peak_s else None, 1.5,
                                    peak_f <= 1.5 * peak_s if peak_f and peak_s else None),
        "parity_max_rel_diff": t(par.get("max_rel_diff"), PARITY_RTOL, par.get("ok") if par.get("arms") else None,
                                 "" if par.get("reference_complete") else "reference is a partial seed run"),
        "fast_end_to_end_beats_seed": t(end_to_end, seed_s, end_to_end < seed_s if end_to_end and seed_s else None,
                                        "fast warm-up + steps vs the seed plan's steps (the eager plan, measured "
                                        "on the same card)"),
        "sweep_wall_seconds": t(wall, (sweep or {}).get("target_seconds"),
                                wall <= sweep["target_seconds"] if wall is not None else
                                (False if sweep and sweep.get("done") is not None else None),
                                "" if wall is not None else "not every variant finished within the cap"),
        # every sweep variant's per-step losses within max(0.5%, the solo run's rerun spread) of the same variant
        # trained alone with the same LoRA forwards (harness.gpu.seed_sweep.sweep_parity)
        "sweep_parity_max_rel_diff": t((sweep or {}).get("parity_max_rel_diff"),
                                       (sweep or {}).get("parity_bound") or PARITY_RTOL,
                                       (sweep or {}).get("parity_ok") if (sweep or {}).get("parity") else None,
                                       "" if (sweep or {}).get("parity") else "no solo reference (sweep-solo) ran"),
        "sweep_32_wall_seconds": t(s32 if (s32 := (sweep_32 or {}).get("wall_seconds")) is not None
                                   and sweep_32.get("done") == sweep_32.get("variants") else None, None, None,
                                   "measured, no bound: how the sweep's wall time grows with K"),
        "sweep_32_done": t((sweep_32 or {}).get("done"), (sweep_32 or {}).get("variants"),
                           (sweep_32 or {}).get("done") == (sweep_32 or {}).get("variants") if sweep_32 else None,
                           "variants finished (a capped sweep keeps the groups it finished)"),
    }
