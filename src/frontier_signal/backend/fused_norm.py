"""RMSNorm with a hand-written backward, for training through the frozen base model.

transformers' `LlamaRMSNorm` is six elementwise ops (upcast, square, mean, rsqrt, scale,
downcast, weight) and autograd keeps fp32 copies for each one's backward; on SmolLM2 8x256 (1
thread) a norm's forward and backward took ~11 ms, ~0.7 s of a step over the 61 norms. Here the
forward runs the same ops (the outputs are bit-identical) but keeps only the input and the
per-row `1/rms`; the backward is one expression, `rstd * (g*w - xhat * mean(g*w * xhat))`:
~4 ms. Used only when a gradient is wanted and the norm's weight is frozen (LoRA training);
inference and full fine-tuning run the module's own forward. In bf16 on CPU with our C++ ops
loaded, each direction is one pass over a row instead (csrc/rms_norm.cpp): the demo's 61 norms
took ~34 ms of a ~0.7 s step through these ops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps: float):
        hidden = x.float()
        rstd = torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, rstd, weight)
        return weight * (hidden * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, rstd, weight = ctx.saved_tensors
        x_hat = x.float().mul_(rstd)
        grad_hat = (grad_out * weight).float()
        dot = (grad_hat * x_hat).mean(-1, keepdim=True)
        grad_x = grad_hat.sub_(x_hat.mul_(dot)).mul_(rstd).to(x.dtype)
        return grad_x, None, None


class _NativeRMSNorm(torch.autograd.Function):
    """The same in one C++ pass each way (csrc/rms_norm.cpp), for bf16 on CPU."""

    @staticmethod
    def forward(ctx, x, weight, eps: float, ops):
        x = x.contiguous()  # (the backward reads the same rows)
        out, rstd = ops.rms_norm(x, weight, eps)
        ctx.save_for_backward(x, rstd, weight)
        ctx.ops = ops
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, rstd, weight = ctx.saved_tensors
        return ctx.ops.rms_norm_backward(grad_out, x, rstd, weight), None, None, None


_FUSED: dict[type[nn.Module], type] = {}


def swap_forward(
    model: nn.Module,
    matches: Callable[[nn.Module], bool],
    fused_forward: Callable[[type[nn.Module]], Callable],
    cache: dict[type[nn.Module], type],
) -> int:
    """Give every module of `model` that `matches` a subclass of its class whose forward is
    `fused_forward(its class)` (one subclass per class, kept in `cache`; a class, not an instance
    attribute: transformers' output capturing resets instance forwards); returns how many."""
    count = 0
    for module in model.modules():
        if not matches(module):  # (a swapped module still matches: same name and attributes)
            continue
        kind = type(module)
        if kind not in cache.values():
            if kind not in cache:
                cache[kind] = type(kind.__name__, (kind,), {"forward": fused_forward(kind)})
            module.__class__ = cache[kind]
        count += 1
    return count


def _norm_forward(base: type[nn.Module]) -> Callable:
    """The norm's forward, through `_RMSNorm` when a gradient flows past a frozen weight."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if (
            torch.is_grad_enabled()
            and hidden_states.requires_grad
            and not self.weight.requires_grad
        ):
            from frontier_signal.backend import native  # (native imports the decode path)

            ops = native.training_ops(hidden_states.device, hidden_states.dtype)
            if ops is not None and self.weight.dtype == hidden_states.dtype:
                return _NativeRMSNorm.apply(hidden_states, self.weight, self.variance_epsilon, ops)
            return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)
        return base.forward(self, hidden_states)

    return forward


def install_fused_norms(model: nn.Module) -> int:
    """Give every Llama-style RMSNorm of `model` (a `weight` and a `variance_epsilon`) the
    fused training backward; returns how many."""

    def matches(module: nn.Module) -> bool:
        return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")

    return swap_forward(model, matches, _norm_forward, _FUSED)
