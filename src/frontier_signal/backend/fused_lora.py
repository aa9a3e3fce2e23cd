"""A LoRA linear's bf16 training step on CPU in C++ (csrc/lora.cpp): the base matmul in ATen,
every LoRA product in `vdpbf16ps` kernels of our own.

At LoRA's shapes (rank 8-64 against 576-1536 features) oneDNN's bf16 matmuls run at 50-170
GFLOP/s, and autograd's path adds per adapter and layer a cast of A and of B, a scale, an add of
the delta into the base output, and in backward an add of the input gradient's two terms and a
cast of each weight gradient to fp32. In the demo's step (one row of ~300 tokens) that was ~18 %
of the time. Here the delta is added into the base output in place, the LoRA term of the input
gradient into the base's input gradient, and the weight gradients come out in fp32 directly.

Used in bf16 on a CPU with AVX512-BF16 with our ops loaded (training steps, forward-only requests
and prefills alike), for a bias-free frozen base whose adapters cover the batch in equal blocks
of rows (one run, or N runs' equal requests) without dropout. Everything else takes
`LoraLinear`'s autograd path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _LoraLinear(torch.autograd.Function):
    """`x @ W.T + s_g * (x_g @ A_g.T) @ B_g.T` on G equal row blocks; W frozen."""

    @staticmethod
    def forward(ctx, x_MI, weight_OI, ops, scales, groups, skip_base, *lora):
        y_MO, hidden_MR = _forward(x_MI, weight_OI, ops, scales, groups, lora, skip_base)
        ctx.save_for_backward(x_MI, weight_OI, hidden_MR, *lora)
        ctx.ops, ctx.scales, ctx.groups = ops, scales, groups
        return y_MO

    @staticmethod
    def backward(ctx, grad_MO):
        x_MI, weight_OI, hidden_MR, *lora = ctx.saved_tensors
        grad_MO = grad_MO.to(x_MI.dtype).contiguous()
        grad_x = torch.mm(grad_MO, weight_OI) if ctx.needs_input_grad[0] else None
        groups = ctx.groups
        grads_a, grads_b = ctx.ops.lora_backward(
            grad_MO, x_MI, hidden_MR, grad_x, lora[:groups], lora[groups:], ctx.scales
        )
        return (grad_x, None, None, None, None, None, *grads_a, *grads_b)


def _forward(
    x_MI, weight_OI, ops, scales, groups: int, lora, skip_base: bool = False
) -> tuple[torch.Tensor, Any]:
    """(y, the scaled hidden state the backward reads): the base matmul (zeros where
    `skip_base`: `lora.layer_recompute`), the deltas added in."""
    if skip_base:
        y_MO = x_MI.new_zeros(x_MI.shape[0], weight_OI.shape[0])
    else:
        y_MO = torch.mm(x_MI, weight_OI.t())
    hidden_MR = ops.lora_forward(x_MI, y_MO, list(lora[:groups]), list(lora[groups:]), scales)
    return y_MO, hidden_MR


def _ops(x: torch.Tensor) -> Any | None:
    from frontier_signal.backend import native  # it imports the decode path, which imports lora

    # Without the AVX512-BF16 kernels the ops refuse: the autograd path runs.
    return native.with_bf16_kernels(native.training_ops(x.device, x.dtype))


def linear(
    base: nn.Linear, x: torch.Tensor, pairs: list, training: bool, skip_base: bool = False
) -> torch.Tensor | None:
    """`base(x)` plus the LoRA deltas of `pairs` (one rank, G = len(pairs) equal blocks of x's
    first dimension, in order) through the C++ kernels; None where they do not apply. Without
    gradients (a prefill, a forward-only request) the same forward runs outside autograd: such
    a forward adds the LoRA terms a training step adds."""
    if base.bias is not None or base.weight.requires_grad:
        return None
    if training and any(pair.dropout > 0 for pair in pairs):
        return None
    if x.shape[-1] % 2 or base.out_features % 2:  # the kernels take features in pairs
        return None
    ops = _ops(x)
    if ops is None or base.weight.dtype != x.dtype:
        return None
    x_MI = x.reshape(-1, x.shape[-1]).contiguous()
    weights = [pair.lora_A for pair in pairs] + [pair.lora_B for pair in pairs]
    if any(w.dtype != torch.float32 or w.device != x.device for w in weights):
        return None
    scales = [float(pair.scale) for pair in pairs]
    if torch.is_grad_enabled():
        y_MO = _LoraLinear.apply(x_MI, base.weight, ops, scales, len(pairs), skip_base, *weights)
    else:
        y_MO, _ = _forward(x_MI, base.weight, ops, scales, len(pairs), weights)
    return y_MO.reshape(*x.shape[:-1], y_MO.shape[-1])
