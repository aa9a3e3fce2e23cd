"""The hand-written unembedding log-prob (backend/unembed.py) against autograd's."""

import pytest
import torch
import torch.nn.functional as F

from frontier_signal.backend import unembed
from frontier_signal.backend.unembed import linear_target_logprobs


def _reference(hidden, weight, targets):
    logits = (hidden @ weight.T).float()
    return -F.cross_entropy(logits, targets, reduction="none")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("native_softmax", [True, False])
def test_values_and_gradient_match_autograd(dtype, keep, native_softmax, monkeypatch, request):
    """bf16 on CPU takes our C++ softmax (csrc/attention.cpp `softmax_lse`) where it is loaded,
    else torch's softmax and the most likely token's log-normaliser."""
    monkeypatch.setattr(unembed, "ROWS_PER_PASS", 7)  # several passes, one of them partial
    calls = []
    if native_softmax:
        ops = request.getfixturevalue("native_ops")

        class Counted:
            def softmax_lse(self, logits):
                calls.append(logits.shape)
                return ops.softmax_lse(logits)

        chosen = unembed.native.training_ops
        monkeypatch.setattr(unembed.native, "training_ops", lambda d, t: chosen(d, t) and Counted())
    else:
        monkeypatch.setattr(unembed.native, "training_ops", lambda device, dtype: None)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(20, 16, generator=generator).to(dtype)
    weight = (torch.randn(50, 16, generator=generator) * 2).to(dtype)
    targets = torch.randint(0, 50, (20,), generator=generator)
    upstream = torch.randn(20, generator=generator)

    ours_h = hidden.clone().requires_grad_()
    ours = linear_target_logprobs(ours_h, weight, targets, keep)
    (ours * upstream).sum().backward()
    ref_h = hidden.clone().requires_grad_()
    ref = _reference(ref_h, weight, targets)
    (ref * upstream).sum().backward()

    assert ours.dtype == torch.float32
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ours, ref, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(ours_h.grad.float(), ref_h.grad.float(), atol=tolerance, rtol=0.05)
    # the op ran exactly where it applies: bf16 with it loaded, once per chunk of rows
    assert bool(calls) == (native_softmax and dtype == torch.bfloat16)


def test_confident_targets_keep_their_small_gradient():
    """p(target) near 1 rounds to 1.0 in bf16; the target column comes from the fp32 log-prob,
    so the gradient 1 - p is not lost."""
    hidden = torch.zeros(1, 2, dtype=torch.bfloat16)
    hidden[0, 0] = 1
    weight = torch.zeros(4, 2, dtype=torch.bfloat16)
    weight[0, 0] = 9.0  # p(0) = e^9 / (e^9 + 3) = 0.99963
    hidden.requires_grad_()
    lp = linear_target_logprobs(hidden, weight, torch.tensor([0]), keep=True)
    lp.sum().backward()
    expected = (1 - lp.exp().item()) * 9.0  # d lp / d h0 = (1 - p) * w00 - sum of others (0)
    assert hidden.grad[0, 0].item() == pytest.approx(expected, rel=0.02)


def test_no_gradient_path_and_a_trainable_weight_is_refused():
    hidden, weight = torch.randn(3, 4), torch.randn(5, 4)
    targets = torch.tensor([0, 1, 4])
    torch.testing.assert_close(
        linear_target_logprobs(hidden, weight, targets, keep=True),
        _reference(hidden, weight, targets),
    )
    with pytest.raises(ValueError, match="frozen"):
        linear_target_logprobs(hidden, weight.requires_grad_(), targets, keep=True)
