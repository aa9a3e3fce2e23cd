"""Training attention on CPU in bf16, and the sampling prompt pass's: ATen's batched matmuls
around our fused softmax.

torch's CPU attention kernels spend most of their time outside the matmuls on a training step's
shapes: the flash kernel's backward goes block by block (8 rows × 256 tokens, 9 heads of 64:
~52 ms forward + backward a layer), and the matmul kernel makes about fifteen fp32 passes over
the [queries, keys] scores. Here the four matmuls of the backward and two of the forward run as
bf16 batched matmuls (at the machine's bf16 matmul rate), and the softmax and its backward are
one pass each in C++ (`csrc/attention.cpp`): bf16 in, fp32 per row, bf16 out, as HF's eager
attention rounds (bf16 scores, fp32 softmax, bf16 probabilities).

Heads that share a key-value head are stacked along the query rows, so one matmul serves them
and the key and value gradients are summed over them by the matmul itself (no `repeat_kv`).
The probabilities are kept for backward: heads × keys bf16 values per query token and layer,
which `BaseModel.activation_bytes` counts.

A prompt pass (no gradients, `BaseModel.prompt_attention`) keeps nothing and attends here at
any length while one call's scores fit `INFERENCE_SCORES_BYTES` (causal rows go block by block,
so only a block's count), else through SDPA. It is faster than torch's flash kernel on the
forward alone (one layer of SmolLM2, causal, bf16: 15.3 vs 23.2 ms at 1,500 tokens, 2.1 vs 4.3
at 512), and a sampler's prompt then goes through the same kernel as training's forward.

`use(config)` makes a model attend through it (transformers looks the attention function up by
`config._attn_implementation` on every call); the masks are transformers' SDPA masks (None for
plain causal rows, else booleans shared by the heads).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from frontier_signal.backend import native

NAME = "frontier_cpu_attention"
# Rows up to this many keys attend here; longer ones through torch's flash kernel, which keeps
# no keys² probabilities (here up to heads × keys² bf16 values a row and layer: 18 MiB for
# SmolLM2 at 1,024 keys).
MAX_KEYS = 1024
# Without gradients (a sampling prompt pass) any length attends here while one layer's scores
# take at most this many bytes (the block-by-block causal path holds one block's at a time).
INFERENCE_SCORES_BYTES = 64 << 20
# Causal rows of at least two such blocks attend block by block (`_CausalBlocks`).
CAUSAL_BLOCK = 128


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """True where this path runs: bf16 on CPU, with our C++ op loaded."""
    return native.training_ops(device, dtype) is not None


class _Attention(torch.autograd.Function):
    """q [B, KV, R, D] (R = heads per key-value head × queries), k and v [B, KV, K, D]."""

    @staticmethod
    def forward(ctx, ops, q, k, v, mask, causal: bool, scale: float, queries: int):
        scores = torch.matmul(q, k.transpose(-1, -2))
        probs = ops.attention_softmax(scores, scale, queries, causal, mask)
        ctx.save_for_backward(q, k, v, probs)
        ctx.shape = (ops, causal, scale, queries)
        return torch.matmul(probs, v)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, probs = ctx.saved_tensors
        ops, causal, scale, queries = ctx.shape
        grad_q = grad_k = grad_v = None
        if ctx.needs_input_grad[3]:
            grad_v = torch.matmul(probs.transpose(-1, -2), grad_out)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_probs = torch.matmul(grad_out, v.transpose(-1, -2))
            grad_scores = ops.attention_softmax_backward(probs, grad_probs, scale, queries, causal)
            if ctx.needs_input_grad[1]:
                grad_q = torch.matmul(grad_scores, k)
            if ctx.needs_input_grad[2]:
                grad_k = torch.matmul(grad_scores.transpose(-1, -2), q)
        return None, grad_q, grad_k, grad_v, None, None, None, None


class _CausalBlocks(torch.autograd.Function):
    """Causal self-attention in blocks of queries, each against the keys up to its end only,
    so the matmuls skip most of the masked half: 3/4 of the work at 2 blocks, 5/8 at 4.
    q [B, KV, heads per key-value head, T, D], k and v [B, KV, T, D]."""

    @staticmethod
    def forward(ctx, ops, q, k, v, scale: float, block: int):
        batch, kv_heads, per_kv, length, dim = q.shape
        out = q.new_empty(q.shape)
        saved = []
        for start in range(0, length, block):
            end = min(length, start + block)
            q_c = q[:, :, :, start:end].reshape(batch, kv_heads, -1, dim)
            scores = torch.matmul(q_c, k[:, :, :end].transpose(-1, -2))
            probs = ops.attention_softmax(scores, scale, end - start, True, None)
            out[:, :, :, start:end] = torch.matmul(probs, v[:, :, :end]).view(
                batch, kv_heads, per_kv, end - start, dim
            )
            if any(ctx.needs_input_grad[1:4]):  # inference (a prompt pass) keeps no block
                saved += [q_c, probs]
        ctx.save_for_backward(k, v, *saved)
        ctx.shape = (ops, scale, block)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        k, v, *saved = ctx.saved_tensors
        ops, scale, block = ctx.shape
        batch, kv_heads, per_kv, length, dim = grad_out.shape
        grad_q = grad_out.new_empty(grad_out.shape)
        grad_k, grad_v = torch.zeros_like(k), torch.zeros_like(v)
        for index, start in enumerate(range(0, length, block)):
            end = min(length, start + block)
            q_c, probs = saved[2 * index], saved[2 * index + 1]
            grad_c = grad_out[:, :, :, start:end].reshape(batch, kv_heads, -1, dim)
            grad_v[:, :, :end] += torch.matmul(probs.transpose(-1, -2), grad_c)
            grad_probs = torch.matmul(grad_c, v[:, :, :end].transpose(-1, -2))
            grad_scores = ops.attention_softmax_backward(
                probs, grad_probs, scale, end - start, True
            )
            grad_q[:, :, :, start:end] = torch.matmul(grad_scores, k[:, :, :end]).view(
                batch, kv_heads, per_kv, end - start, dim
            )
            grad_k[:, :, :end] += torch.matmul(grad_scores.transpose(-1, -2), q_c)
        return None, grad_q, grad_k, grad_v, None, None


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float | None = None,
) -> torch.Tensor:
    """query [B, H, Q, D], key and value [B, KV, K, D] (H a multiple of KV), mask bool
    [1 or B, Q, K] (True: may attend) → [B, H, Q, D]. Causal: query i sees keys up to
    i + K - Q. A query that sees no key gets zeros."""
    ops = native.training_ops(query.device, query.dtype)
    assert ops is not None, "cpu_attention runs only where `available` said so"
    batch, heads, queries, dim = query.shape
    kv_heads = key.shape[1]
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    if causal and _blockwise(queries, key.shape[2], mask):
        q5 = query.reshape(batch, kv_heads, heads // kv_heads, queries, dim)
        out = _CausalBlocks.apply(ops, q5, key, value, scale, CAUSAL_BLOCK)
        return out.view(batch, heads, queries, dim)
    q = query.reshape(batch, kv_heads, heads // kv_heads * queries, dim)
    mask = None if mask is None else mask.contiguous()
    out = _Attention.apply(ops, q, key, value, mask, causal, scale, queries)
    return out.view(batch, heads, queries, dim)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature (→ [B, Q, H, D], no weights); what this path
    does not cover (dropout, additive or per-head masks, soft-capping), and calls without
    gradients whose scores would not fit `INFERENCE_SCORES_BYTES`, go to SDPA."""
    plain = (
        not (dropout and module.training)
        and kwargs.get("softcap") is None
        and kwargs.get("position_bias") is None
        and query.dtype == key.dtype == value.dtype == torch.bfloat16
        and (
            attention_mask is None
            or (attention_mask.dtype == torch.bool and attention_mask.shape[1] == 1)
        )
    )
    if not plain or (
        not torch.is_grad_enabled()
        and _scores_bytes(query, key, attention_mask) > INFERENCE_SCORES_BYTES
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    mask = None if attention_mask is None else attention_mask[:, 0]
    out = attention(
        query, key, value, mask, causal and mask is None and query.shape[2] > 1, scaling
    )
    return out.transpose(1, 2).contiguous(), None


def _blockwise(queries: int, keys: int, mask: torch.Tensor | None) -> bool:
    """Whether causal rows attend block by block (`_CausalBlocks`)."""
    return mask is None and queries == keys and queries >= 2 * CAUSAL_BLOCK


def _scores_bytes(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None) -> int:
    """The bf16 scores one call holds at a time (taken as causal): one block of queries where
    it goes block by block, else all of them."""
    batch, heads, queries, _ = query.shape
    if _blockwise(queries, key.shape[2], mask):
        queries = CAUSAL_BLOCK
    return 2 * batch * heads * queries * key.shape[2]


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


_register()


@contextlib.contextmanager
def attention_implementation(config, name: str) -> Iterator[None]:
    """Inside: the model whose `config` this is attends through the attention function
    registered as `name` (transformers looks it up by `config._attn_implementation` on every
    call, so a switch for the block is enough; other threads must not run the model meanwhile)."""
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def use(config) -> contextlib.AbstractContextManager:
    """Inside: the model whose `config` this is attends through `attention_forward`."""
    return attention_implementation(config, NAME)
