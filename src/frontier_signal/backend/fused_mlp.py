"""The Llama MLP's activation, `silu(gate) * up`, in one C++ pass each way (csrc/silu_gate.cpp).

Autograd runs it as silu and a multiply forward, and two multiplies and `silu_backward` in
backward: five passes over [tokens, intermediate] tensors (8 rows × 256 tokens of SmolLM2: 6 MB
each in bf16). The fused op reads the gate and up projections once forward and once backward,
rounding to bf16 where the unfused ops round, and keeps only the two inputs for backward (not
`silu(gate)` as well). Used for bf16 training on CPU with our C++ ops loaded; everything else
(fp32, CUDA, inference) runs the module's own forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from frontier_signal.backend import native
from frontier_signal.backend.fused_norm import swap_forward


class _SiluGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, ops):
        ctx.save_for_backward(gate, up)
        ctx.ops = ops
        return ops.silu_gate(gate, up)

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        grad_gate, grad_up = ctx.ops.silu_gate_backward(grad, gate, up)
        return grad_gate, grad_up, None


def applies(x: torch.Tensor) -> bool:
    """True where the fused op runs on an MLP input `x`: bf16 on CPU, our C++ ops loaded."""
    return native.training_ops(x.device, x.dtype) is not None


def silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """`silu(gate) * up` through the fused op (where `applies`)."""
    return _SiluGate.apply(gate.contiguous(), up.contiguous(), native.ops())


_FUSED: dict[type[nn.Module], type] = {}
_SILU = {"SiLU", "SiLUActivation"}  # torch's and transformers' (ACT2FN["silu"])


def _mlp_forward(base: type[nn.Module]) -> Callable:
    """The MLP's forward, with the fused activation when a gradient is wanted."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and applies(x):
            return self.down_proj(silu_gate(self.gate_proj(x), self.up_proj(x)))
        return base.forward(self, x)

    return forward


def install_fused_mlps(model: nn.Module) -> int:
    """Give every Llama-style SiLU MLP of `model` (gate, up and down projections) the fused
    activation in training; returns how many."""

    def matches(module: nn.Module) -> bool:
        return (
            type(module).__name__.endswith("MLP")
            and all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj"))
            and type(getattr(module, "act_fn", None)).__name__ in _SILU
        )

    return swap_forward(model, matches, _mlp_forward, _FUSED)
