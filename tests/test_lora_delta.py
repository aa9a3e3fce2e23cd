"""The grouped LoRA delta's hand-written backward (backend/lora.py) against autograd's."""

import pytest
import torch
from torch import nn

from frontier_signal.backend.lora import LoraPair, grouped_lora_delta


def _pairs(scales, generator):
    return [
        LoraPair(
            nn.Parameter(torch.randn(4, 8, generator=generator)),
            nn.Parameter(torch.randn(6, 4, generator=generator)),
            scale,
            0.0,
        )
        for scale in scales
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_group_gets_its_own_adapter_scale_and_gradients(dtype):
    generator = torch.Generator().manual_seed(0)
    pairs = _pairs([2.0, 0.5, 11.3], generator)
    x = torch.randn(3, 5, 8, generator=generator).to(dtype).requires_grad_()
    upstream = torch.randn(3, 5, 6, generator=generator).to(dtype)
    (grouped_lora_delta(x, pairs) * upstream).sum().backward()

    ref_x = x.detach().clone().requires_grad_()
    refs = [
        (p.lora_A.detach().clone().requires_grad_(), p.lora_B.detach().clone().requires_grad_())
        for p in pairs
    ]
    out = torch.stack(
        [
            (ref_x[g] @ a.to(dtype).T) @ (b * p.scale).to(dtype).T
            for g, (p, (a, b)) in enumerate(zip(pairs, refs, strict=True))
        ]
    )
    (out * upstream).sum().backward()

    tolerance = (
        {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 0.1, "rtol": 0.03}
    )
    torch.testing.assert_close(x.grad.float(), ref_x.grad.float(), **tolerance)
    for pair, (a, b) in zip(pairs, refs, strict=True):
        assert pair.lora_A.grad.dtype == torch.float32  # fp32 master weights get fp32 gradients
        torch.testing.assert_close(pair.lora_A.grad, a.grad, **tolerance)
        torch.testing.assert_close(pair.lora_B.grad, b.grad, **tolerance)


def test_without_gradients_it_is_the_plain_product():
    generator = torch.Generator().manual_seed(1)
    pairs = _pairs([2.0], generator)
    x = torch.randn(1, 3, 8, generator=generator)
    with torch.no_grad():
        out = grouped_lora_delta(x, pairs)
    expected = 2.0 * (x[0] @ pairs[0].lora_A.T) @ pairs[0].lora_B.T
    torch.testing.assert_close(out[0], expected.detach())
