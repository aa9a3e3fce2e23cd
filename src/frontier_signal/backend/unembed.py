"""log p(target) through a frozen unembedding, with a hand-written backward.

Training needs, per token, the log-probability of its target under `softmax(h @ W.T)`, and the
gradient of that with respect to `h`. Through autograd that is a bf16 matmul, an fp32 copy of
the logits, a log-softmax, a gather, and in backward their mirror images, about ten passes over
an `[N, vocab]` tensor (vocab is 49,152 for SmolLM2, so 200 MB per 1,024 tokens in fp32), and
with the chunk checkpointed to bound memory, the matmul and log-softmax run twice.

Here the forward keeps what the backward needs instead: the softmax probabilities in the
compute dtype (half the fp32 logits' bytes), and the target's exact fp32 log-prob. The backward
is then one fused expression, `g * (onehot - p)`, and one matmul. When the probabilities would
not fit the caller's budget, the forward keeps only `h` and the backward recomputes them (the
old checkpointed cost, nothing more).

This covers a frozen weight with no adapter on it; a LoRA on `lm_head` goes through autograd
(`base_model.target_logprobs` decides). It does not reduce the log-probs into a loss.
"""

from __future__ import annotations

import torch

from frontier_signal.backend import native

ROWS_PER_PASS = 256  # fp32 temporaries of [256, vocab]: ~50 MB for a 49k vocabulary


def _exact_logprobs(logits_NV: torch.Tensor, targets_N: torch.Tensor) -> torch.Tensor:
    """fp32 log p(target) by a fused fp32 log-softmax, a few hundred rows at a time (no
    gradient: sampling's prompt log-probs and forward-only calls)."""
    logprobs_N = torch.empty(logits_NV.shape[0], dtype=torch.float32, device=logits_NV.device)
    for start in range(0, logits_NV.shape[0], ROWS_PER_PASS):
        end = min(start + ROWS_PER_PASS, logits_NV.shape[0])
        rows = torch.log_softmax(logits_NV[start:end].float(), dim=-1)
        logprobs_N[start:end] = rows.gather(1, targets_N[start:end, None]).squeeze(1)
    return logprobs_N


def _probs_and_logprobs(
    logits_NV: torch.Tensor, targets_N: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities in the logits' dtype [N, V], fp32 log p(target) [N]) in two passes: the
    softmax kernel (fp32 inside, written in the logits' dtype) and a max. The log-normaliser
    comes from the most likely token, `lse = x_max - log p_max`: p_max >= 1/vocab never
    underflows, and its bf16 rounding moves every log-prob by at most ~0.002 (the bf16 logits
    themselves are rounded by up to ~0.03 at magnitude 10)."""
    ops = native.training_ops(logits_NV.device, logits_NV.dtype)
    if ops is not None and logits_NV.is_contiguous():
        # One C++ pass (csrc/attention.cpp), and the exact fp32 log-sum-exp of each row.
        probs_NV, lse_N = ops.softmax_lse(logits_NV)
        logprobs_N = logits_NV.gather(1, targets_N[:, None]).squeeze(1).float() - lse_N
        return probs_NV, logprobs_N
    probs_NV = torch.softmax(logits_NV, dim=-1)
    top_N, index_N = logits_NV.max(dim=-1)
    p_top_N = probs_NV.gather(1, index_N[:, None]).squeeze(1).float()
    lse_N = top_N.float() - torch.log(p_top_N)
    logprobs_N = logits_NV.gather(1, targets_N[:, None]).squeeze(1).float() - lse_N
    return probs_NV, logprobs_N


class _LinearTargetLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_ND, weight_VD, targets_N, keep: bool):
        probs_NV, logprobs_N = _probs_and_logprobs(hidden_ND @ weight_VD.T, targets_N)
        ctx.save_for_backward(
            hidden_ND, weight_VD, targets_N, logprobs_N, probs_NV if keep else None
        )
        return logprobs_N

    @staticmethod
    def backward(ctx, grad_N):
        hidden_ND, weight_VD, targets_N, logprobs_N, probs_NV = ctx.saved_tensors
        if probs_NV is None:  # recompute what the forward did not keep
            probs_NV = torch.softmax(hidden_ND @ weight_VD.T, dim=-1)
        # d log p_t / d logits = onehot(t) - p: scale p by -g in place (it is not needed again),
        # then put the target column's exact value, g * (1 - p_t), from the fp32 log-prob.
        # (The row scale is rounded to the compute dtype: an all-bf16 multiply is several times
        # faster than a mixed one, and autograd's path rounded the product to bf16 as well.)
        grad_logits_NV = probs_NV.mul_(-grad_N.to(probs_NV.dtype)[:, None])
        rows_N = torch.arange(len(targets_N), device=targets_N.device)
        target_grad_N = grad_N * -torch.expm1(logprobs_N)
        grad_logits_NV[rows_N, targets_N] = target_grad_N.to(probs_NV.dtype)
        grad_hidden = grad_logits_NV @ weight_VD if ctx.needs_input_grad[0] else None
        return grad_hidden, None, None, None


def linear_target_logprobs(
    hidden_ND: torch.Tensor, weight_VD: torch.Tensor, targets_N: torch.Tensor, keep: bool
) -> torch.Tensor:
    """log softmax(hidden @ weight.T)[n, targets[n]] in fp32, differentiable in `hidden` only.

    `keep`: hold the probabilities for backward (N x V in the hidden states' dtype) rather than
    recompute them there. The weight must be frozen (no gradient is returned for it).
    """
    if weight_VD.requires_grad:
        raise ValueError("linear_target_logprobs needs a frozen weight")
    if not torch.is_grad_enabled() or not hidden_ND.requires_grad:
        with torch.no_grad():
            return _exact_logprobs(hidden_ND @ weight_VD.T, targets_N)
    return _LinearTargetLogprob.apply(hidden_ND, weight_VD, targets_N, keep)
