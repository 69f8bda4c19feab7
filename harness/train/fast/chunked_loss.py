"""The training loss computed from the final hidden states, a chunk of tokens at a time.

    hidden, head = final_hidden(model, ids, positions, mask)   # the decoder stack only: no logits
    per_row = chunked_row_losses(hidden, head, labels, row_scale)   # [rows] fp32, backward-able

The model's own loss (transformers' ForCausalLMLoss, or Unsloth's fused one) materializes the whole
[rows x T x vocab] logits, in fp32 for the loss, and autograd keeps them until backward: on a 128k
vocabulary that is most of a long row's memory. Here lm_head and the cross-entropy run over chunks of
tokens inside one autograd function whose forward also computes the gradient of the hidden states
(softmax minus one-hot, times each token's weight, times lm_head's weight): only one chunk's logits
exist at a time, and backward is one multiply. lm_head must be frozen (LoRA never trains it).

The math is transformers' causal-LM loss: labels shifted by one inside each row, -100 ignored, logits
in the compute dtype (bf16 under autocast, as lm_head gives them) and the softmax and cross-entropy in
fp32. Each token's loss is multiplied by its row's scale (1 / the step's target count for that row's
variant, 0 for an empty row), so one call serves K variants with K normalisations. Nothing syncs with
the host and every shape is fixed by the input's, so the call can live inside a CUDA graph.
"""
from __future__ import annotations

CHUNK_BYTES = 256 * 1024 ** 2  # fp32 logits of one chunk (~520 tokens on a 128k vocabulary): its peak memory


def supported(model) -> str:
    """Why the chunked loss cannot stand in for this model's own loss, or "" when it can."""
    lm = _causal_lm(model)
    cfg = getattr(lm, "config", None)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if head is None or getattr(head, "bias", None) is not None or not hasattr(head, "weight"):
        return "the model has no plain lm_head"
    if head.weight.requires_grad:
        return "lm_head is trained"
    for key in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale"):
        value = getattr(cfg, key, None)
        if value not in (None, 1, 1.0):  # Gemma's softcapping, Cohere's / Granite's logit scales: not reproduced
            return f"the model scales its logits ({key})"
    if _backbone(lm) is None:
        return "no decoder stack with embed_tokens and layers"
    return ""


def _causal_lm(model):
    """The transformers causal LM inside a PEFT (or Unsloth) wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _backbone(lm):
    inner = getattr(lm, "model", None)
    return inner if inner is not None and hasattr(inner, "embed_tokens") and hasattr(inner, "layers") else None


def final_hidden(model, ids, positions, **attention):
    """The decoder stack's output (after its final norm) for rows [R, T], and lm_head's weight.

    attention: attention_mask (a 4D block-diagonal mask), or Unsloth's packed_seq_lengths."""
    lm = _causal_lm(model)
    # Called directly, not through the CausalLM head, the stack also leaves the incoming gradient intact (Unsloth
    # lets its final norm overwrite it only for its own head's fresh gradient).
    out = _backbone(lm)(input_ids=ids, position_ids=positions, use_cache=False, return_dict=True, **attention)
    return out[0], lm.get_output_embeddings().weight


def chunk_tokens(vocab: int) -> int:
    """Tokens per chunk so that one chunk's fp32 logits take CHUNK_BYTES."""
    return max(16, CHUNK_BYTES // (4 * vocab))


def shifted_targets(labels):
    """Next-token targets per position: labels shifted left by one inside each row, -100 at the row's end."""
    import torch

    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)


def chunked_row_losses(hidden, head_weight, labels, row_scale, chunk: int = 0):
    """Per row, the sum of its targets' cross-entropy times row_scale (a [R] fp32 device tensor); [R] fp32.

    hidden [R, T, H]; labels [R, T] as the model takes them (unshifted, -100 ignored). Backward flows
    into hidden only. chunk: tokens per chunk (0: chunk_tokens of the vocabulary)."""
    import torch

    rows, t = labels.shape
    targets = shifted_targets(labels).reshape(-1)
    scale = (targets != -100).to(torch.float32) * row_scale.to(torch.float32).repeat_interleave(t)
    flat = hidden.reshape(rows * t, hidden.shape[-1])
    chunk = chunk or chunk_tokens(head_weight.shape[0])
    need_grad = torch.is_grad_enabled() and flat.requires_grad
    dtype = torch.get_autocast_dtype(flat.device.type) if torch.is_autocast_enabled(flat.device.type) else flat.dtype
    token = _ChunkedCE.apply(flat, head_weight, targets, scale, chunk, need_grad, dtype)
    return token.view(rows, t).sum(dim=1)


def _chunked_ce_forward(hidden, weight, targets, scale, chunk: int, need_grad: bool, dtype):
    """Weighted per-token losses [N] and, if asked, their gradient with respect to hidden [N, H]."""
    import torch

    n = hidden.shape[0]
    losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
    grad = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if need_grad else None
    w = weight.to(dtype)
    for s in range(0, n, chunk):
        h = hidden[s:s + chunk].to(dtype)
        logits = (h @ w.t()).float()  # the logits lm_head gives in the compute dtype, then fp32 as the loss takes them
        tgt = targets[s:s + chunk].clamp(min=0).unsqueeze(1)  # ignored positions read token 0 and get weight 0
        lse = torch.logsumexp(logits, dim=1)
        picked = logits.gather(1, tgt).squeeze(1)
        sc = scale[s:s + chunk]
        losses[s:s + chunk] = (lse - picked) * sc
        if need_grad:
            probs = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax in place of the logits: one chunk's buffer
            probs.scatter_add_(1, tgt, torch.full_like(picked, -1.0).unsqueeze(1))
            probs.mul_(sc.unsqueeze(1))
            grad[s:s + chunk] = probs.to(dtype) @ w
    return losses, grad


class _ChunkedCE:
    """torch.autograd.Function, built on first use (this module imports no torch at import time)."""

    _fn = None

    @classmethod
    def apply(cls, *args):
        if cls._fn is None:
            cls._fn = _make_function()
        return cls._fn.apply(*args)


def _make_function():
    import torch

    class ChunkedCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, scale, chunk, need_grad, dtype):
            with torch.autocast(hidden.device.type, enabled=False):  # dtypes are explicit inside
                losses, grad = _chunked_ce_forward(hidden, weight, targets, scale, chunk, need_grad, dtype)
            if grad is not None:
                ctx.save_for_backward(grad)
            ctx.hidden_dtype = hidden.dtype
            return losses

        @staticmethod
        def backward(ctx, grad_losses):
            (grad,) = ctx.saved_tensors
            out = (grad * grad_losses.unsqueeze(1).to(grad.dtype)).to(ctx.hidden_dtype)
            return out, None, None, None, None, None, None

    return ChunkedCE
