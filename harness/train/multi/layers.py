"""K LoRA adapters of one PEFT model, stacked: every target layer computes its base once for all rows and the
LoRA products per adapter with a batched matmul, row block k belonging to adapter k.

    stack = StackedLora(model, k=8)     # each adapter starts at the PEFT model's current LoRA weights
    stack.install()                     # the target layers now run base(x) + bmm(bmm(x_k, A_k^T), B_k^T) * scaling
    ... train (multi_engine) ...; stack.export(3)   # adapter 3 into the PEFT weights, e.g. to save it
    stack.uninstall()

Storage: one [K, P] buffer for the weights (P = one adapter's LoRA parameters, in PEFT's order), one for
their gradients; each layer's A ([K, r, in], PEFT's lora_A layout) and B ([K, out, r]) are autograd leaves
that alias their columns of it, with .grad aliasing the same columns of the gradient buffer. So clipping and
AdamW per adapter are a handful of ops over [K, P] rows (`clip_per_adapter`, `adamw_rows`), and adapter k's
row is exactly what a PEFT model with that adapter holds (`export`).

The layers' forward is replaced on the instance (peft's own Linear.forward stays on the class and comes
back at uninstall). On Unsloth, its fused LoRA kernels read the PEFT weights directly, so while the stack
is installed the layers are told to use peft's forwards (harness.backends.unsloth_private), which call
the replaced forward.
"""
from __future__ import annotations

import os
import sys
import warnings

from harness.train.multi.ops import FORM_ENV, stacked_lora

# The leaves alias [K, P] buffers with row stride P, which autograd's layout check flags once per leaf: the
# gradients still accumulate in place into the aliased columns (tests/test_multi_engine.py).
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


def lora_layers(model) -> list[tuple[str, object]]:
    """The PEFT LoRA Linear layers of the model (name, module), in named_modules order."""
    return [(n, m) for n, m in model.named_modules()
            if hasattr(m, "lora_A") and hasattr(m, "base_layer") and len(getattr(m, "lora_A", {})) > 0]


def refusal(model) -> str:
    """Why the model's LoRA layers cannot be stacked, or "" when they can (one adapter, plain LoRA, no dropout)."""
    layers = lora_layers(model)
    if not layers:
        return "no LoRA layers"
    for name, m in layers:
        adapters = list(m.lora_A.keys())
        if len(adapters) != 1 or list(m.active_adapters) != adapters:
            return f"{name} has adapters {adapters}, not one active adapter"
        a = adapters[0]
        if type(m.lora_dropout[a]).__name__ != "Identity":
            return "LoRA dropout is on (each adapter's mask would need its own generator)"
        dora = getattr(m, "lora_magnitude_vector", None) or {}
        if getattr(m.lora_B[a], "bias", None) is not None or a in dora or a in getattr(m, "lora_variant", {}):
            return f"{name} is not plain LoRA (bias, DoRA or another variant)"
        if type(m.lora_A[a]).__name__ != "Linear" or type(m.lora_B[a]).__name__ != "Linear":
            return f"{name} is not a Linear LoRA layer"
    trainable = {id(p) for _, m in layers for p in (m.lora_A[m.active_adapters[0]].weight,
                                                    m.lora_B[m.active_adapters[0]].weight)}
    extra = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in trainable]
    if extra:
        return f"trainable parameters besides LoRA A/B ({extra[0]})"
    return ""


class StackedLora:
    """K adapters' LoRA weights for every LoRA layer of a PEFT model, stacked over a leading adapter dimension."""

    def __init__(self, model, k: int):
        """Each of the k adapters starts at the model's current LoRA weights."""
        import torch

        if why := refusal(model):
            raise ValueError(f"cannot stack this model's LoRA: {why}")
        self.model, self.k = model, k
        self.layers = [m for _, m in lora_layers(model)]
        self.adapter = self.layers[0].active_adapters[0]
        self.peft_params = [p for m in self.layers for p in (m.lora_A[self.adapter].weight,
                                                             m.lora_B[self.adapter].weight)]
        dtypes = {p.dtype for p in self.peft_params}
        if len(dtypes) != 1:
            raise ValueError(f"LoRA weights of several dtypes {sorted(map(str, dtypes))}")
        first = self.peft_params[0]
        self.sizes = [p.numel() for p in self.peft_params]
        p_total = sum(self.sizes)
        self.weights = torch.empty(k, p_total, dtype=first.dtype, device=first.device)
        self.grads = torch.zeros_like(self.weights)
        self.leaves = []  # per PEFT parameter: the [K, *shape] leaf over its columns
        at = 0
        for p, n in zip(self.peft_params, self.sizes):
            leaf = self.weights[:, at:at + n].view(k, *p.shape).detach().requires_grad_()
            leaf.grad = self.grads[:, at:at + n].view(k, *p.shape)
            self.leaves.append(leaf)
            at += n
        self.scaling = [float(m.scaling[self.adapter]) for m in self.layers]
        self.start = torch.cat([p.detach().reshape(-1) for p in self.peft_params])  # LoRA as loaded
        self.reset()
        self.window: tuple[int, int] = (0, k)  # the adapters whose rows a forward's input holds, in order
        self.form = os.environ.get(FORM_ENV, "") or "separate"  # how the LoRA product joins the base output (ops)
        self._installed = False
        self._unsloth = None

    def reset(self, adapters=None) -> None:
        """The given adapters (default all) back at the LoRA weights the stack started from, grads zero."""
        import torch

        with torch.no_grad():
            rows = range(self.k) if adapters is None else adapters
            for r in rows:
                self.weights[r].copy_(self.start)
                self.grads[r].zero_()

    def export(self, adapter: int) -> None:
        """Copy one adapter's weights into the PEFT model's own LoRA parameters (to save it or sample with it)."""
        import torch

        with torch.no_grad():
            at = 0
            for p, n in zip(self.peft_params, self.sizes):
                p.copy_(self.weights[adapter, at:at + n].view(p.shape))
                at += n

    def restore_peft(self) -> None:
        """The PEFT model's own LoRA parameters back at the weights the stack started from."""
        import torch

        with torch.no_grad():
            at = 0
            for p, n in zip(self.peft_params, self.sizes):
                p.copy_(self.start[at:at + n].view(p.shape))
                at += n

    def row(self, adapter: int):
        """One adapter's weights as a flat vector (a view)."""
        return self.weights[adapter]

    def install(self) -> None:
        """Replace the LoRA layers' forward with the stacked one (and, on Unsloth, send its fused paths through it)."""
        if self._installed:
            return
        if "unsloth" in sys.modules:  # first: its undo must not see the forwards set below
            from harness.backends import unsloth_private

            self._unsloth = unsloth_private.plain_lora_forwards(self.model, self.layers)
        for i, m in enumerate(self.layers):
            m.forward = self._forward_of(i, m)
        self._installed = True

    def uninstall(self) -> None:
        """peft's own forward (and Unsloth's fused paths) back; the PEFT weights are whatever export() left."""
        if not self._installed:
            return
        for m in self.layers:
            m.__dict__.pop("forward", None)
        if self._unsloth is not None:
            self._unsloth()
            self._unsloth = None
        self._installed = False

    def _forward_of(self, i: int, module):
        """The stacked forward of layer i: base for all rows, then the LoRA product of each adapter's rows."""
        base, a_leaf, b_leaf, scaling = module.base_layer, self.leaves[2 * i], self.leaves[2 * i + 1], self.scaling[i]

        def forward(x, *args, **kwargs):
            result = base(x, *args, **kwargs)
            lo, hi = self.window
            a, b = (a_leaf, b_leaf) if (lo, hi) == (0, self.k) else (a_leaf[lo:hi], b_leaf[lo:hi])
            if x.shape[0] % (hi - lo):
                raise ValueError(f"{x.shape[0]} rows do not split over {hi - lo} adapters")
            return stacked_lora(result, x, a, b, scaling, self.form)

        return forward
