"""The LoRA kernels of a bf16 training step on CPU (backend/fused_lora.py, csrc/lora.cpp): their
outputs and gradients against fp32 math and against the autograd path they replace, each run of
a batched group exactly what it gets alone, and a training step of the tiny model through them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from frontier_signal.backend import fused_lora
from frontier_signal.backend.lora import LoraLinear, LoraPair, Routing
from frontier_signal.backend.training import run_forward_backward
from frontier_signal.engine.types import ForwardBackwardRequest
from tests.conftest import bf16_tiny_run, shifted_rows


@pytest.fixture(autouse=True)
def bf16_kernels(native_ops):
    if not native_ops.has_bf16_kernel():
        pytest.skip("this CPU has no AVX512-BF16: the autograd path runs")


def _layer(groups, rows, in_features, out_features, rank, seed=0):
    generator = torch.Generator().manual_seed(seed)
    base = nn.Linear(in_features, out_features, bias=False).requires_grad_(False)
    base.weight.copy_(torch.randn(out_features, in_features, generator=generator) / 8)
    layer = LoraLinear(base.bfloat16(), Routing())
    for g in range(groups):
        layer.adapters[f"run{g}"] = LoraPair(
            nn.Parameter(torch.randn(rank, in_features, generator=generator) / 8),
            nn.Parameter(torch.randn(out_features, rank, generator=generator) / 4),
            scale=1.5 + g,
            dropout=0.0,
        )
    x = torch.randn(groups * rows, 3, in_features, generator=generator).bfloat16()
    grad = torch.randn(groups * rows, 3, out_features, generator=generator).bfloat16()
    segments = [(f"run{g}", g * rows, (g + 1) * rows) for g in range(groups)]
    return layer, x, grad, segments


def _step(layer, x, grad, segments, fused=True):
    """The layer's output and the gradients of x and every adapter weight."""
    x = x.clone().requires_grad_()
    for pair in layer.adapters.values():
        pair.lora_A.grad = pair.lora_B.grad = None
    calls = []
    real = fused_lora.linear
    try:
        fused_lora.linear = lambda *a: calls.append(1) or real(*a) if fused else None
        out = layer.forward_segments(x, segments)
    finally:
        fused_lora.linear = real
    out.backward(grad)
    weights = [g for p in layer.adapters.values() for g in (p.lora_A.grad, p.lora_B.grad)]
    return (out, x.grad, *weights), len(calls)


def _fp32_reference(layer, x, grad, segments):
    x = x.float().requires_grad_()
    outs = []
    for key, start, end in segments:
        pair = layer.adapters[key]
        pair.lora_A.grad = pair.lora_B.grad = None
        xs = x[start:end]
        base = xs @ layer.base.weight.float().t()
        outs.append(base + pair.scale * (xs @ pair.lora_A.t()) @ pair.lora_B.t())
    out = torch.cat(outs)
    out.backward(grad.float())
    weights = [g for p in layer.adapters.values() for g in (p.lora_A.grad, p.lora_B.grad)]
    return (out, x.grad, *weights)


@pytest.mark.parametrize(
    "groups, rows, in_features, out_features, rank",
    [(1, 97, 96, 160, 16), (1, 5, 64, 32, 3), (3, 4, 32, 48, 5), (2, 11, 160, 64, 32)],
)
def test_outputs_and_gradients_match_fp32_math_and_the_autograd_path(
    groups, rows, in_features, out_features, rank
):
    layer, x, grad, segments = _layer(groups, rows, in_features, out_features, rank)
    ours, calls = _step(layer, x, grad, segments)
    autograd, _ = _step(layer, x, grad, segments, fused=False)
    exact = _fp32_reference(layer, x, grad, segments)
    assert calls == 1
    for name, a, b, c in zip(["out", "x", "A/B"], ours, autograd, exact, strict=False):
        scale = c.abs().max()
        # bf16 products summed in fp32: within a few bf16 ulps of fp32 math, as autograd is
        assert (a.float() - c).abs().max() <= 0.02 * scale, name
        assert (b.float() - c).abs().max() <= 0.02 * scale, name
    for a, c in zip(ours[2:], exact[2:], strict=True):
        assert a.dtype == torch.float32
        assert (a - c).abs().max() <= 0.01 * c.abs().max()


def test_each_run_of_a_batched_group_gets_exactly_what_it_gets_alone():
    layer, x, grad, segments = _layer(3, 7, 64, 96, 8)
    together, _ = _step(layer, x, grad, segments)
    for g, (key, start, end) in enumerate(segments):
        alone, _ = _step(layer, x[start:end], grad[start:end], [(key, 0, end - start)])
        assert torch.equal(together[0][start:end], alone[0])
        assert torch.equal(together[1][start:end], alone[1])
        assert torch.equal(together[2 + 2 * g], alone[2 + 2 * g])  # this run's A and B
        assert torch.equal(together[3 + 2 * g], alone[3 + 2 * g])


def test_odd_features_dropout_and_partial_segments_take_the_autograd_path():
    layer, x, grad, segments = _layer(2, 3, 64, 32, 4)
    assert _step(layer, x, grad, segments[:1])[1] == 0  # rows not all covered: not tried
    next(iter(layer.adapters.values())).dropout = 0.1
    layer.train()
    assert fused_lora.linear(layer.base, x, list(layer.adapters.values()), True) is None
    odd = LoraLinear(nn.Linear(64, 33, bias=False).bfloat16().requires_grad_(False), Routing())
    pair = LoraPair(nn.Parameter(torch.zeros(4, 64)), nn.Parameter(torch.zeros(33, 4)), 1.0, 0.0)
    assert fused_lora.linear(odd.base, x.requires_grad_(), [pair], False) is None


def test_a_bf16_training_step_of_the_tiny_model_matches_the_autograd_path(monkeypatch):
    engine, base, run = bf16_tiny_run(seed=1)
    request = ForwardBackwardRequest(run, shifted_rows(), reduction="sum")
    calls = []
    real = fused_lora.linear
    results = {}
    for on in (True, False):

        def linear(*args, on=on):
            calls.append(on)
            return real(*args) if on else None

        monkeypatch.setattr(fused_lora, "linear", linear)
        engine._run(run).clear_gradient()
        (result,) = run_forward_backward(base, engine._runs, [request])
        results[on] = (result.loss_sum, [p.grad.clone() for p in engine._run(run).parameters()])
    assert calls.count(True) == 2 * 7  # two layers, seven projections each
    assert results[True][0] == pytest.approx(results[False][0], rel=2e-3)
    for a, b in zip(results[True][1], results[False][1], strict=True):
        assert (a - b).abs().max() <= 0.03 * b.abs().max() + 1e-6


def test_a_forward_without_gradients_runs_the_kernels_and_gives_the_training_log_probs(
    monkeypatch,
):
    """Forward-only requests and prefills go through the same C++ LoRA forward as a training
    step (outside autograd): a forward's log-probs are the training step's (the norms and the
    MLP still take torch's ops without gradients: ~1 fp32 ulp apart in a few)."""
    engine, base, run = bf16_tiny_run(seed=2)
    calls = []
    real = fused_lora.linear

    def linear(*args):
        out = real(*args)
        calls.append((torch.is_grad_enabled(), out is not None))
        return out

    monkeypatch.setattr(fused_lora, "linear", linear)
    rows = shifted_rows()
    trained = ForwardBackwardRequest(run, rows, reduction="sum")
    forward = ForwardBackwardRequest(run, rows, reduction="sum", forward_only=True)
    (step,) = run_forward_backward(base, engine._runs, [trained])
    (alone,) = run_forward_backward(base, engine._runs, [forward])
    assert calls.count((False, True)) == 2 * 7 and calls.count((True, True)) == 2 * 7
    ours, theirs = torch.tensor(sum(alone.logprobs, [])), torch.tensor(sum(step.logprobs, []))
    assert (ours - theirs).abs().max() <= 1e-5 and (ours != theirs).float().mean() < 0.05
    assert alone.loss_sum == pytest.approx(step.loss_sum, rel=1e-6)


def test_a_checkpointed_recompute_skips_the_down_projections_base_matmul_and_changes_nothing(
    monkeypatch,
):
    """Under gradient checkpointing each decoder layer's recompute skips the down projection's
    base matmul (its output only feeds the layer's output, which backward does not read): the
    loss and every gradient are those of the step without checkpointing, and of a recompute
    that does not skip, bit for bit."""
    from frontier_signal.backend import lora

    engine, base, run = bf16_tiny_run(seed=3)
    skipped = []
    real = lora.LoraLinear._skips_base

    def spy(self):
        skipped.append(real(self))
        return skipped[-1]

    monkeypatch.setattr(lora.LoraLinear, "_skips_base", spy)
    downs = [layer for name, layer in base.layers.items() if name.endswith("mlp.down_proj")]
    assert downs and all(layer.output_leaves_layer for layer in downs)
    request = ForwardBackwardRequest(run, shifted_rows(), reduction="sum")
    results = {}
    for case, budget, skip in (("plain", None, True), ("skip", 0, True), ("full", 0, False)):
        for layer in downs:
            layer.output_leaves_layer = skip
        engine._run(run).clear_gradient()
        skipped.clear()
        (result,) = run_forward_backward(
            base, engine._runs, [request], activation_budget_bytes=budget
        )
        assert base._checkpointing == (budget == 0)
        grads = [p.grad.clone() for p in engine._run(run).parameters()]
        results[case] = (result.loss_sum, grads, skipped.count(True))
    assert results["skip"][2] == len(downs) and results["plain"][2] == results["full"][2] == 0
    for case in ("skip", "full"):
        assert results[case][0] == results["plain"][0]
        for a, b in zip(results[case][1], results["plain"][1], strict=True):
            assert torch.equal(a, b), case
