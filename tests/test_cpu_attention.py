"""Training attention on CPU in bf16 (backend/cpu_attention.py, csrc/attention.cpp) against
fp32 SDPA: outputs and q/k/v gradients for causal rows, boolean masks (packed rows, padding,
shared-prefix pieces) and grouped key-value heads; and a bf16 training step of the tiny model
through it against the same step through SDPA."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from frontier_signal.backend import cpu_attention
from frontier_signal.backend.training import run_forward_backward
from frontier_signal.engine.types import Datum, ForwardBackwardRequest
from tests.conftest import TINY, bf16_tiny_run

pytestmark = pytest.mark.usefixtures("native_ops")


def _inputs(batch, heads, kv_heads, queries, keys, dim=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, queries, dim, generator=generator)
    k = torch.randn(batch, kv_heads, keys, dim, generator=generator)
    v = torch.randn(batch, kv_heads, keys, dim, generator=generator)
    grad = torch.randn(batch, heads, queries, dim, generator=generator)
    return [t.bfloat16() for t in (q, k, v)], grad.bfloat16()


def _reference(q, k, v, grad, mask, causal):
    """fp32 SDPA on the same bf16 values; a query that sees nothing gives zeros (as ours)."""
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    attn_mask = None if mask is None else mask[:, None]
    if causal:
        queries, keys = q.shape[2], k.shape[2]
        rows = torch.arange(queries)[:, None] + keys - queries
        attn_mask = torch.arange(keys)[None, :] <= rows
    with sdpa_kernel([SDPBackend.MATH]):
        out = F.scaled_dot_product_attention(*leaves, attn_mask=attn_mask, enable_gqa=True)
    out = torch.nan_to_num(out)
    out.backward(grad.float())
    return out, [t.grad for t in leaves]


def _ours(q, k, v, grad, mask, causal):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = cpu_attention.attention(*leaves, mask, causal)
    out.backward(grad)
    return out, [t.grad for t in leaves]


def _close(ours, reference, tolerance=0.02):
    ours = ours.float()
    assert torch.isfinite(ours).all()
    scale = reference.abs().max().clamp_min(1e-3)
    assert (ours - reference).abs().max() / scale < tolerance


@pytest.mark.parametrize(
    ("batch", "heads", "kv_heads", "queries", "keys"),
    [
        (2, 4, 2, 37, 37),
        (1, 9, 3, 130, 130),
        (3, 2, 2, 5, 21),
        (2, 6, 3, 1, 17),
        (1, 4, 2, 300, 300),
    ],
)
def test_causal_attention_and_its_gradients_match_fp32_sdpa(batch, heads, kv_heads, queries, keys):
    """(300 queries: in blocks of 128, 128 and 44, each against the keys up to its end.)"""
    (q, k, v), grad = _inputs(batch, heads, kv_heads, queries, keys)
    out, grads = _ours(q, k, v, grad, None, causal=True)
    ref_out, ref_grads = _reference(q, k, v, grad, None, causal=True)
    _close(out, ref_out)
    for ours, reference in zip(grads, ref_grads, strict=True):
        _close(ours, reference)


def test_boolean_masks_packed_rows_and_padding():
    """Two packed sequences per row (block-diagonal causal), and padded queries that see no key:
    those get zeros and no gradient flows from them."""
    (q, k, v), grad = _inputs(2, 4, 2, 40, 40, seed=1)
    position = torch.arange(40)
    causal = position[None, :] <= position[:, None]
    same = (position[:, None] < 17) == (position[None, :] < 17)
    mask = (causal & same).expand(2, 40, 40).clone()
    mask[1, 33:] = False  # row 1: 7 padded queries
    out, grads = _ours(q, k, v, grad, mask, causal=False)
    ref_out, ref_grads = _reference(q, k, v, grad, mask, causal=False)
    _close(out, ref_out)
    for ours, reference in zip(grads, ref_grads, strict=True):
        _close(ours, reference)
    assert out[1, :, 33:].abs().max() == 0
    # a query of the second packed sequence does not move with the first sequence's values
    (q2, k2, v2), _ = _inputs(2, 4, 2, 40, 40, seed=1)
    v2[:, :, :17] += 5.0
    moved, _ = _ours(q2, k2, v2, grad, mask, causal=False)
    assert torch.equal(moved[:, :, 17:33], out[:, :, 17:33])


def _datums(seed: int) -> list[Datum]:
    rng = random.Random(seed)
    prompt = [rng.randrange(3, 250) for _ in range(24)]
    out = []
    for length in (13, 40, 7, 29):
        tokens = prompt + [rng.randrange(3, 250) for _ in range(length)]
        weights = [0.0] * (len(prompt) - 1) + [1.0] * length
        out.append(Datum(tokens[:-1], tokens[1:], weights=weights))
    return out


@pytest.mark.parametrize("pack", [False, True])
def test_a_bf16_training_step_matches_the_sdpa_step(pack, monkeypatch):
    """The tiny model in bf16, four datums of different lengths (padded rows; with `pack`, one
    shared 24-token prefix attended piece by piece): log-probs and LoRA gradients through our
    attention equal the SDPA step's within bf16 rounding, and the step really went through it."""
    engine, base, run = bf16_tiny_run(seed=3)
    request = ForwardBackwardRequest(run, _datums(7), reduction="sum")
    calls = []
    softmax = cpu_attention._Attention.forward

    def counted(*args):
        calls.append(1)
        return softmax(*args)

    results = {}
    for kernel in ("native", "sdpa"):
        monkeypatch.setattr(cpu_attention, "MAX_KEYS", 1024 if kernel == "native" else 0)
        monkeypatch.setattr(cpu_attention._Attention, "forward", staticmethod(counted))
        engine._run(run).clear_gradient()
        calls.clear()
        (result,) = run_forward_backward(base, engine._runs, [request], pack=pack)
        grads = [p.grad.float().clone() for p in engine._run(run).parameters()]
        logprobs = torch.tensor([x for row in result.logprobs for x in row])
        results[kernel] = (logprobs, grads, len(calls))
    (logprobs, grads, used), (ref_logprobs, ref_grads, unused) = results["native"], results["sdpa"]
    assert used > 0 and unused == 0
    assert (logprobs - ref_logprobs).abs().max() < 0.05 * ref_logprobs.abs().max()
    for ours, reference in zip(grads, ref_grads, strict=True):
        _close(ours, reference, tolerance=0.05)


def test_the_prompt_pass_attends_here_within_its_scores_budget(monkeypatch):
    """Sampling's prompt pass (no gradients) goes through our kernel too: a 300-token prompt
    alone (block by block) and beside a 41-token one (a padding mask). Its prompt log-probs
    equal an SDPA pass's within bf16 rounding; past the scores budget SDPA takes the calls."""
    from frontier_signal.engine.types import SampleRequest, SamplingParams

    engine, base, run = bf16_tiny_run(seed=4)
    engine.prefix_cache(TINY).configure(0)  # every pass computes its whole prompt
    rng = random.Random(5)
    prompts = [[rng.randrange(3, 250) for _ in range(n)] for n in (300, 41)]
    params = SamplingParams(max_tokens=1, temperature=0)
    requests = [SampleRequest(run, p, params, prompt_logprobs=True) for p in prompts]
    calls = []
    for kind in (cpu_attention._Attention, cpu_attention._CausalBlocks):
        original = kind.forward

        def counted(*args, _original=original, _kind=kind.__name__):
            calls.append(_kind)
            return _original(*args)

        monkeypatch.setattr(kind, "forward", staticmethod(counted))
    results = {}
    for budget in (cpu_attention.INFERENCE_SCORES_BYTES, 0):
        monkeypatch.setattr(cpu_attention, "INFERENCE_SCORES_BYTES", budget)
        calls.clear()
        outcome = engine.sample_batch(requests[:1]) + engine.sample_batch(requests)
        logprobs = torch.tensor([x for r in outcome for x in r.prompt_logprobs[1:]])
        results[budget] = (logprobs, set(calls))
    (logprobs, used), (reference, unused) = results.values()
    assert used == {"_Attention", "_CausalBlocks"} and unused == set()
    assert (logprobs - reference).abs().max() < 0.05 * reference.abs().max()
