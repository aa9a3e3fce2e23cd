"""Each loss against a small hand-computed example, and through the engine on real log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from frontier_signal.backend.losses import per_token_loss
from frontier_signal.engine.types import Datum

P = [-0.5, -2.0, -1.0]  # model log-probs of the targets
Q = [-0.7, -1.0, -1.0]  # sampler log-probs
A = [1.0, -2.0, 0.5]  # advantages
W = [1.0, 1.0, 0.0]  # the last token is masked out


def _loss(loss_fn, config=None, p=P):
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    return per_token_loss(loss_fn, t(p), t(W), t(Q), t(A), config or {}).tolist()


def test_cross_entropy_is_minus_weighted_logprob():
    assert _loss("cross_entropy") == pytest.approx([0.5, 2.0, 0.0])


def test_importance_sampling_is_minus_ratio_times_advantage():
    r0, r1 = math.exp(-0.5 + 0.7), math.exp(-2.0 + 1.0)
    assert _loss("importance_sampling") == pytest.approx([-r0 * 1.0, -r1 * -2.0, 0.0])


def test_ppo_takes_the_pessimistic_clipped_term_with_default_and_custom_ranges():
    r0, r1 = math.exp(0.2), math.exp(-1.0)  # 1.221 (above 1.2), 0.368 (below 0.8)
    # token 0: A>0, min(r*A, 1.2*A) = 1.2; token 1: A<0, min(0.368*-2, 0.8*-2) = -1.6
    assert _loss("ppo") == pytest.approx([-1.2, 1.6, 0.0], rel=1e-6)
    wide = _loss("ppo", {"clip_low_threshold": 0.1, "clip_high_threshold": 5.0})
    assert wide == pytest.approx([-r0, 2 * r1, 0.0], rel=1e-6)


def test_cispo_weights_the_logprob_by_the_clipped_ratio_without_its_gradient():
    p = torch.tensor(P, requires_grad=True)
    t = lambda x: torch.tensor(x)  # noqa: E731
    losses = per_token_loss("cispo", p, t(W), t(Q), t(A), {})
    # values: -clip(r)·p·A → token 0: -1.2·(-0.5)·1 = 0.6; token 1: -0.8·(-2)·(-2) = -3.2
    assert losses.tolist() == pytest.approx([0.6, -3.2, 0.0], rel=1e-6)
    losses.sum().backward()
    # gradient is -clip(r)·A per token (the ratio is a constant), 0 where masked
    assert p.grad.tolist() == pytest.approx([-1.2, 1.6, 0.0], rel=1e-6)


def test_dro_is_policy_gradient_minus_a_quadratic_penalty():
    beta = 0.5
    expected = [-(P[i] * A[i] - 0.5 * beta * (P[i] - Q[i]) ** 2) * W[i] for i in range(3)]
    assert _loss("dro", {"beta": beta}) == pytest.approx(expected, rel=1e-6)


def test_importance_sampling_gradient_is_minus_ratio_times_advantage():
    p = torch.tensor(P, requires_grad=True)
    t = lambda x: torch.tensor(x)  # noqa: E731
    per_token_loss("importance_sampling", p, t(W), t(Q), t(A), {}).sum().backward()
    expected = [-math.exp(P[i] - Q[i]) * A[i] * W[i] for i in range(3)]
    assert p.grad.tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("loss_fn", ["importance_sampling", "ppo", "cispo", "dro"])
def test_rl_losses_through_the_engine_use_the_models_logprobs(engine, make_run, datums, loss_fn):
    """On-policy (q = p), A = 1: every RL loss reduces to a known function of p."""
    run = make_run()
    p = engine.forward(run, datums).logprobs
    rl = [
        Datum(d.input_tokens, d.target_tokens, sampler_logprobs=lp, advantages=[1.0] * len(lp))
        for d, lp in zip(datums, p, strict=True)
    ]
    out = engine.forward_backward(run, rl, loss_fn=loss_fn)
    for row, logprobs in zip(out.elementwise_loss, p, strict=True):
        if loss_fn == "cispo" or loss_fn == "dro":
            expected = [-lp for lp in logprobs]  # ratio 1 → -p·A; dro penalty is 0
        else:
            expected = [-1.0] * len(logprobs)  # -r·A with r = 1
        assert row == pytest.approx(expected, abs=1e-4)
    assert out.grad_norm > 0
