"""The fused RMSNorm backward (backend/fused_norm.py) against transformers' module."""

import copy

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from frontier_signal.backend.fused_norm import install_fused_norms


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_are_identical_and_gradients_match_autograd(dtype):
    generator = torch.Generator().manual_seed(0)
    reference = LlamaRMSNorm(64, eps=1e-5)
    reference.weight.data = torch.rand(64, generator=generator) + 0.5
    reference = reference.to(dtype).requires_grad_(False)
    fused = copy.deepcopy(reference)
    assert install_fused_norms(torch.nn.Sequential(fused)) == 1
    x = (torch.randn(3, 7, 64, generator=generator) * 3).to(dtype)
    upstream = torch.randn(3, 7, 64, generator=generator).to(dtype)

    x_ref, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_fused = reference(x_ref), fused(x_fused)
    assert torch.equal(out_ref, out_fused)
    (out_ref.float() * upstream.float()).sum().backward()
    (out_fused.float() * upstream.float()).sum().backward()
    tolerance = (
        {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}
    )
    torch.testing.assert_close(x_fused.grad.float(), x_ref.grad.float(), **tolerance)


def test_inference_and_trainable_weights_use_the_modules_own_forward():
    norm = LlamaRMSNorm(8)
    install_fused_norms(torch.nn.Sequential(norm))
    x = torch.randn(2, 8, requires_grad=True)
    out = norm(x)  # weight trainable: autograd's path, so the weight gets its gradient
    out.sum().backward()
    assert norm.weight.grad is not None
    with torch.no_grad():
        assert torch.equal(norm(x), LlamaRMSNorm.forward(norm, x))


@pytest.mark.parametrize("hidden", [64, 576, 37])
def test_the_bf16_cpu_kernel_matches_transformers_norm_and_the_autograd_backward(
    native_ops, hidden
):
    from frontier_signal.backend import fused_norm

    generator = torch.Generator().manual_seed(1)
    reference = LlamaRMSNorm(hidden, eps=1e-5)
    reference.weight.data = torch.rand(hidden, generator=generator) + 0.5
    reference = reference.bfloat16().requires_grad_(False)
    x = (torch.randn(5, 9, hidden, generator=generator) * 3).bfloat16()
    upstream = torch.randn(5, 9, hidden, generator=generator).bfloat16()
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref = reference(x_ref)
    out_ours = fused_norm._NativeRMSNorm.apply(x_ours, reference.weight, 1e-5, native_ops)
    # Only the mean's summation order differs: at most a last-bit flip, and rarely.
    assert (out_ours.float() - out_ref.float()).abs().max() <= out_ref.float().abs().max() / 128
    assert (out_ours != out_ref).float().mean() < 0.01
    out_ref.backward(upstream)
    x_fused = x.clone().requires_grad_()
    fused_norm._RMSNorm.apply(x_fused, reference.weight, 1e-5).backward(upstream)
    out_ours.backward(upstream)
    torch.testing.assert_close(x_ours.grad.float(), x_fused.grad.float(), atol=0.02, rtol=0.02)
    torch.testing.assert_close(x_ours.grad.float(), x_ref.grad.float(), atol=0.05, rtol=0.02)


def test_a_bf16_training_norm_on_cpu_runs_the_kernel(native_ops, monkeypatch):
    from frontier_signal.backend import fused_norm

    norm = LlamaRMSNorm(64).bfloat16().requires_grad_(False)
    install_fused_norms(torch.nn.Sequential(norm))
    calls = []
    real = fused_norm._NativeRMSNorm.apply
    monkeypatch.setattr(fused_norm._NativeRMSNorm, "apply", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(3, 2, 64).bfloat16().requires_grad_()
    norm(x.transpose(0, 1)).sum().backward()  # a strided input too
    assert calls == [1] and x.grad is not None
