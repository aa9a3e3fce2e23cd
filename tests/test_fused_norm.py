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
