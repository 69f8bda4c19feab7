"""The multi-adapter engine's kernels over stacked adapters: per-adapter clipping and AdamW over [K, P] rows, and
the stacked LoRA product a target layer adds to its base output.

Each is a handful of torch ops over all K adapters at once, with no host sync, so it can live inside a CUDA graph.
"""
from __future__ import annotations

import math

from harness.train.fast.stepmath import ADAM_BETAS, ADAM_EPS, MAX_GRAD_NORM

FORM_ENV = "ASCIITUNE_STACKED_LORA"  # "fused-add": the expand adds into the base output (stacked_lora); else separate


def stacked_lora(result, x, a, b, scaling: float, form: str = "separate"):
    """The base output plus each adapter block's LoRA product: result [n * rows, ..., out] + per block k of rows
    (x_k A_k^T) B_k^T * scaling, with a [n, r, in] and b [n, out, r] (block k of the rows runs adapter k).

    "separate" computes as peft's Linear.forward does: the input in the LoRA weights' dtype, the delta, scaled
    (a scaling of 1 is skipped: exact), added to the base output in its dtype; under autocast the matmuls cast to
    bf16 anyway (as peft's do), so the input's round trip through the weights' dtype is exact and skipped.
    "fused-add" (under autocast) lets the expand's GEMM add the base output and scale in its epilogue
    (torch.baddbmm): one pass over the output instead of three, and one bf16 rounding of the sum instead of two."""
    import torch

    n = a.shape[0]
    autocast = torch.is_autocast_enabled(x.device.type)
    xs = (x if autocast else x.to(a.dtype)).reshape(n, -1, x.shape[-1])
    shrunk = torch.bmm(xs, a.transpose(1, 2))
    if form == "fused-add" and autocast:
        out = torch.baddbmm(result.reshape(n, -1, result.shape[-1]), shrunk, b.transpose(1, 2), alpha=scaling)
        return out.reshape(result.shape)
    delta = torch.bmm(shrunk, b.transpose(1, 2))
    if scaling != 1:
        delta = delta * scaling
    return (result + delta.reshape(result.shape)).to(result.dtype)


def clip_per_adapter(grads, max_norm: float | None = None) -> None:
    """Each adapter's gradient (a row of grads [K, P]) clipped to max_norm (default MAX_GRAD_NORM) as torch's
    clip_grad_norm_ clips it."""
    import torch

    max_norm = MAX_GRAD_NORM if max_norm is None else max_norm
    norms = torch.linalg.vector_norm(grads.float(), dim=1)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    grads.mul_(coef.to(grads.dtype).unsqueeze(1))


COEFFS = 6  # per adapter and step: decay, 1 - beta1, beta2, 1 - beta2, -step size, sqrt(bias correction 2)


def adamw_coefficients(lr: float, weight_decay: float, step: int | None) -> list[float]:
    """One adapter's AdamW factors for one step (its own step count, 1-based), computed in double as torch's
    single-tensor AdamW computes them; step None: the adapter does not step (every update is an exact no-op)."""
    if step is None:
        return [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    b1, b2 = ADAM_BETAS
    return [1 - lr * weight_decay, 1 - b1, b2, 1 - b2, -lr / (1 - b1 ** step), math.sqrt(1 - b2 ** step)]


def adamw_rows(weights, grads, exp_avg, exp_avg_sq, coeffs) -> None:
    """AdamW over rows [K, P], each row with its own coefficients (coeffs [K, COEFFS] on the device), in place:
    torch.optim.AdamW's update (decoupled weight decay, bias corrections) per adapter, with no host sync.
    The arithmetic is fp32 (as torch's fused AdamW computes for 16-bit weights), the state in the weights' dtype."""
    import torch

    c = coeffs.float().unsqueeze(2)  # [K, COEFFS, 1]: each column broadcasts over a row
    decay, b1w, b2, b2w, neg_step, bc2 = (c[:, i] for i in range(COEFFS))
    fp32 = weights.dtype == torch.float32
    w, g = (weights, grads) if fp32 else (weights.float(), grads.float())
    m, v = (exp_avg, exp_avg_sq) if fp32 else (exp_avg.float(), exp_avg_sq.float())
    w.mul_(decay)
    m.lerp_(g, b1w)
    v.mul_(b2).addcmul_(g, g * b2w)
    denom = (v.sqrt() / bc2).add_(ADAM_EPS)
    w.addcdiv_(m * neg_step, denom)
    if not fp32:
        for dst, src in ((weights, w), (exp_avg, m), (exp_avg_sq, v)):
            dst.copy_(src)
