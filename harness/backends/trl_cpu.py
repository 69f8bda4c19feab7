"""A plain-PyTorch stand-in for TRL's Triton log-prob kernel, for the peft backend on CPU.

TRL 1.15's SFTTrainer always computes the loss through a fused LM head whose kernel is
Triton (GPU only); without a GPU driver it fails. Unsloth swaps in its own kernel; the
plain backend gets this one, which materializes the logits (fine at CPU sizes) and lets
autograd do the backward. It is installed only when CUDA is unavailable.
"""
from __future__ import annotations

import torch


class TorchLogProb:
    """Same call signature and outputs as trl.kernels.ChunkedLogProbFunction.apply."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("entropy",)):
        logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
        if final_logit_softcapping:
            logits = torch.tanh(logits / final_logit_softcapping) * final_logit_softcapping
        logits = logits / temperature
        log_z = torch.logsumexp(logits, dim=-1)
        target = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        logprobs = target - log_z
        log_p = logits - log_z.unsqueeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():
            log_sum_sq = torch.logsumexp(2 * log_p, dim=-1) if "log_sum_sq_probs" in outputs else None
            mean_logits = logits.mean(-1) if "mean_logits" in outputs else None
            is_top1 = (logits.argmax(-1) == targets) if "is_top1" in outputs else None
        return logprobs, entropy, log_sum_sq, mean_logits, is_top1


def install_if_no_cuda() -> bool:
    """Point TRL at TorchLogProb when there is no GPU; returns whether it did."""
    if torch.cuda.is_available():
        return False
    import trl.trainer.utils as trl_utils

    trl_utils._ChunkedLogProbFunction = TorchLogProb
    return True
