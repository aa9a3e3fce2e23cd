"""The fused MLP activation (backend/fused_mlp.py, csrc/silu_gate.cpp): bit for bit what autograd
computes for `silu(gate) * up`, forward and both gradients, and a bf16 training step of the tiny
model gives the same gradients with it as without."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from frontier_signal.backend import fused_mlp
from frontier_signal.backend.training import run_forward_backward
from frontier_signal.engine.types import ForwardBackwardRequest
from tests.conftest import bf16_tiny_run, shifted_rows

pytestmark = pytest.mark.usefixtures("native_ops")


def _grads(fn, gate, up, grad):
    gate, up = gate.clone().requires_grad_(), up.clone().requires_grad_()
    out = fn(gate, up)
    out.backward(grad)
    return out, gate.grad, up.grad


@pytest.mark.parametrize("shape", [(37, 101), (2, 5, 96), (1, 1)])
def test_the_fused_activation_is_autograds_bit_for_bit(shape):
    generator = torch.Generator().manual_seed(0)
    gate = (torch.randn(shape, generator=generator) * 4).bfloat16()
    gate.view(-1)[0] = -100.0  # e^100: silu is -0, its slope 0
    up = torch.randn(shape, generator=generator).bfloat16()
    grad = torch.randn(shape, generator=generator).bfloat16()
    ours = _grads(fused_mlp.silu_gate, gate, up, grad)
    reference = _grads(lambda g, u: F.silu(g) * u, gate, up, grad)
    for a, b in zip(ours, reference, strict=True):
        assert torch.equal(a, b)


def test_a_bf16_training_step_gives_the_same_gradients_with_and_without_it(monkeypatch):
    engine, base, run = bf16_tiny_run(seed=1)
    mlps = [m for m in base.model.modules() if type(m).__name__ == "LlamaMLP"]
    assert mlps and all(type(m) in fused_mlp._FUSED.values() for m in mlps)
    request = ForwardBackwardRequest(run, shifted_rows(), reduction="sum")
    calls = []
    fused = fused_mlp.silu_gate
    monkeypatch.setattr(fused_mlp, "silu_gate", lambda g, u: calls.append(1) or fused(g, u))
    grads = {}
    for on in (True, False):
        monkeypatch.setattr(fused_mlp, "applies", lambda x, on=on: on)
        engine._run(run).clear_gradient()
        run_forward_backward(base, engine._runs, [request])
        grads[on] = [p.grad.clone() for p in engine._run(run).parameters()]
    assert len(calls) == len(mlps)  # the fused step went through it, once per layer
    for a, b in zip(grads[True], grads[False], strict=True):
        assert torch.equal(a, b)
