"""adamw_8bit: block-wise 8-bit moments that track fp32 AdamW, in a quarter of the memory."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from frontier_signal.backend.adamw_8bit import BLOCK, AdamW8bit, dequantize, quantize
from frontier_signal.engine.types import OptimizerSpec
from tests.conftest import make_config


def _regression(optimizer_class, steps=300):
    """A rank-16 factorised least-squares fit, the shape of a LoRA update."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 64, generator=generator)
    targets = inputs @ torch.randn(64, 8, generator=generator)
    a = torch.nn.Parameter(torch.randn(64, 16, generator=generator) * 0.1)
    b = torch.nn.Parameter(torch.zeros(16, 8))
    optimizer = optimizer_class([a, b], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    for _ in range(steps):
        loss = ((inputs @ a @ b - targets) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, optimizer


def test_quantization_keeps_about_four_bits_of_every_value_in_a_block():
    signs = torch.randint(0, 2, (8, BLOCK), generator=torch.Generator().manual_seed(0)) * 2 - 1
    values = signs * torch.logspace(-4, 0, BLOCK)  # 4 decades in each block
    codes, scale = quantize(values)
    assert codes.dtype == torch.float8_e4m3fn and codes.element_size() == 1
    relative = (dequantize(codes, scale) - values).abs() / values.abs()
    assert float(relative.max()) <= 1 / 16 + 1e-6  # e4m3 rounds to 3 mantissa bits


def test_it_follows_fp32_adamw_on_a_low_rank_fit():
    exact, _ = _regression(torch.optim.AdamW)
    eight_bit, _ = _regression(AdamW8bit)
    assert eight_bit[0] == exact[0]
    # The same descent up to the moments' rounding: within 1% while the loss moves slowly,
    # within 20% on the steep part (61 → 0.01 in 100 steps: a step's lead is 15-30% there;
    # measured: at most 11%), and the same floor.
    for step in (5, 10, 20):
        assert eight_bit[step] == pytest.approx(exact[step], rel=0.01)
    for step in (30, 50, 70, 100):
        assert eight_bit[step] == pytest.approx(exact[step], rel=0.2)
    assert eight_bit[-1] < 1e-4 * eight_bit[0] and exact[-1] < 1e-4 * exact[0]


def test_its_state_is_a_quarter_of_adamws():
    _, exact = _regression(torch.optim.AdamW, steps=2)
    _, eight_bit = _regression(AdamW8bit, steps=2)

    def state_bytes(optimizer):
        return sum(
            v.numel() * v.element_size()
            for state in optimizer.state.values()
            for k, v in state.items()
            if torch.is_tensor(v) and k != "step"
        )

    assert state_bytes(eight_bit) <= 0.3 * state_bytes(exact)


def test_an_engine_run_with_adamw_8bit_trains_like_adamw(engine, datums):
    losses = {}
    for kind in ("adamw", "adamw_8bit"):
        config = make_config(seed=3)
        config = replace(config, optimizer=OptimizerSpec(kind=kind, learning_rate=1e-2))
        run = engine.create_run(config).run_id
        try:
            losses[kind] = []
            for _ in range(8):
                losses[kind].append(engine.forward_backward(run, datums).loss_sum)
                engine.optim_step(run)
            assert engine.get_run(run).config.optimizer.kind == kind
        finally:
            engine.delete_run(run)
    assert losses["adamw_8bit"][0] == pytest.approx(losses["adamw"][0], rel=1e-6)
    assert losses["adamw_8bit"][-1] < losses["adamw_8bit"][0]
    assert losses["adamw_8bit"] == pytest.approx(losses["adamw"], rel=0.03)


def test_a_training_checkpoint_resumes_8bit_state_exactly(engine, datums, tmp_path):
    config = make_config(seed=5)
    config = replace(config, optimizer=OptimizerSpec(kind="adamw_8bit", learning_rate=1e-2))

    def train(run, steps):
        out = []
        for _ in range(steps):
            out.append(engine.forward_backward(run, datums).loss_sum)
            engine.optim_step(run)
        return out

    straight = engine.create_run(config).run_id
    first = engine.create_run(config).run_id
    resumed = None
    try:
        expected = train(straight, 5)
        train(first, 2)
        engine.save_checkpoint(first, tmp_path / "ckpt", kind="training")
        resumed = engine.create_run_from_checkpoint(tmp_path / "ckpt").run_id
        assert engine.get_run(resumed).config.optimizer.kind == "adamw_8bit"
        assert train(resumed, 3) == pytest.approx(expected[2:], rel=1e-5)
    finally:
        for run in (straight, first, resumed):
            if run is not None:
                engine.delete_run(run)


def test_fp32_adamw_state_converts_into_8bit_state():
    """Runs saved before adamw_8bit was real carry fp32 moments: they load, quantized."""
    _, exact = _regression(torch.optim.AdamW, steps=20)
    params = [p for group in exact.param_groups for p in group["params"]]
    eight_bit = AdamW8bit(params, lr=1e-2)
    for param in params:
        eight_bit.state[param] = {k: v.clone() for k, v in exact.state[param].items()}
    for param in params:
        param.grad = torch.zeros_like(param)
    eight_bit.step()  # rebuilds its flat state from the fp32 moments
    for param in params:
        state = eight_bit.state[param]
        numel = param.numel()
        m = dequantize(state["exp_avg_q"].view(-1, BLOCK), state["exp_avg_scale"]).reshape(-1)
        expected = exact.state[param]["exp_avg"].reshape(-1) * 0.9  # one step of zero grad
        assert torch.allclose(m[:numel], expected, rtol=0.07, atol=1e-6)
        assert int(state["step"]) == 21


def test_dequantize_is_exactly_the_float8_cast_for_every_code_and_scale():
    from frontier_signal.backend.adamw_8bit import CODE_DTYPE, dequantize

    codes = torch.arange(256, dtype=torch.uint8).view(CODE_DTYPE).reshape(1, 256)
    finite = ~codes.float().isnan()  # e4m3fn's two NaN codes are never written
    for scale in (1.0, 3e-7, 123.5):
        got = dequantize(codes, torch.tensor([scale]))
        expected = codes.float() * scale
        assert torch.equal(got[finite], expected[finite])


def test_the_fused_cpu_step_matches_the_python_step(native_ops, monkeypatch):
    """Our C++ step (csrc/adamw_8bit.cpp, the default on CPU) against the vectorised Python one,
    from the same weights, gradients and state over five steps with weight decay: weights
    within a few fp32 ulps of the update, moment codes equal but for rare one-code roundings,
    scales within an ulp. Tensors of odd sizes so blocks end inside them and are padded."""
    from frontier_signal.backend import adamw_8bit

    generator = torch.Generator().manual_seed(5)
    shapes = [(16, 577), (300,), (33, 16)]
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    grads = [[torch.randn(s, generator=generator) * 10**-k for s in shapes] for k in range(5)]
    result = {}
    calls = []
    real = adamw_8bit._native_ops
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        optimizer = AdamW8bit(params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
        choose = lambda p, f=fused: calls.append(f) or (real(p) if f else None)  # noqa: E731
        monkeypatch.setattr(adamw_8bit, "_native_ops", choose)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        state = optimizer._flat[0]
        result[fused] = ([p.detach().clone() for p in params], state)
    (fused_params, fused_state), (python_params, python_state) = result[True], result[False]
    assert True in calls and False in calls
    for a, b, first in zip(fused_params, python_params, start, strict=True):
        assert not torch.equal(a, first)  # it moved
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    for key in ("exp_avg_q", "exp_avg_sq_q"):
        codes_a = fused_state[key].view(torch.uint8).int()
        codes_b = python_state[key].view(torch.uint8).int()
        assert (codes_a - codes_b).abs().max() <= 1
        assert (codes_a != codes_b).float().mean() < 0.01
    for key in ("exp_avg_scale", "exp_avg_sq_scale"):
        assert torch.allclose(fused_state[key], python_state[key], rtol=1e-6, atol=0)
