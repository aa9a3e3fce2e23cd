"""The traceable decoder behind the ONNX export: a Llama forward with an explicit KV cache.

transformers 5 keeps the KV cache in `Cache` objects and builds masks with helpers that the
TorchScript exporter cannot trace, and optimum-onnx does not support transformers 5. So the
export traces this module instead: the same weights and the same sub-modules (embedding, RMS
norms, rotary embedding, projections, MLP, unembedding) of the transformers model, with the
attention written out as plain tensor ops and the cache passed as tensors in and out.
`ONNXConverter.verify_onnx_model` checks the result against the transformers forward itself.

Inputs and outputs are named as optimum names them, so `ORTModelForCausalLM` could load the
file: `input_ids`, `attention_mask` (over past + new tokens), `position_ids`,
`past_key_values.{i}.key|value` [batch, kv_heads, past_len, head_dim] → `logits`,
`present.{i}.key|value` [batch, kv_heads, past_len + new_len, head_dim].
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

SUPPORTED_MODEL_TYPES = ("llama",)


def check_supported(model: torch.nn.Module) -> None:
    """Raise ValueError for architectures the exporter does not know."""
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"ONNX export supports {', '.join(SUPPORTED_MODEL_TYPES)} models (SmolLM2 and the "
            f"tiny test model are Llama); this one is {model_type!r}"
        )


def kv_names(num_layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names), in layer order, key before value."""
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return past, present


class DecoderWithCache(torch.nn.Module):
    """`forward(input_ids, attention_mask, position_ids, *past)` → `(logits, *present)`."""

    def __init__(self, model: Any):  # a transformers Llama-family causal LM
        super().__init__()
        check_supported(model)
        self.model = model
        self.num_layers = model.config.num_hidden_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        inner = self.model.model
        hidden_BTD = inner.embed_tokens(input_ids)
        cos, sin = inner.rotary_emb(hidden_BTD, position_ids)
        past_len = past[0].shape[2]
        new_len = input_ids.shape[1]
        # Query t (absolute position past_len + t) sees key j when j <= past_len + t and the
        # attention mask keeps j (left padding is masked out).
        key_index = torch.arange(past_len + new_len, device=input_ids.device)
        query_index = torch.arange(new_len, device=input_ids.device) + past_len
        causal_TK = key_index[None, :] <= query_index[:, None]
        allowed_B1TK = causal_TK[None, None, :, :] & (attention_mask[:, None, None, :] > 0)
        floor = torch.finfo(hidden_BTD.dtype).min
        present = []
        for index, layer in enumerate(inner.layers):
            attention = layer.self_attn
            residual = hidden_BTD
            normed = layer.input_layernorm(hidden_BTD)
            shape = (normed.shape[0], new_len, -1, attention.head_dim)
            query = attention.q_proj(normed).view(shape).transpose(1, 2)
            key = attention.k_proj(normed).view(shape).transpose(1, 2)
            value = attention.v_proj(normed).view(shape).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            key = torch.cat([past[2 * index], key], dim=2)
            value = torch.cat([past[2 * index + 1], value], dim=2)
            present += [key, value]
            groups = attention.num_key_value_groups
            scores = torch.matmul(query, repeat_kv(key, groups).transpose(2, 3)) * attention.scaling
            scores = torch.where(allowed_B1TK, scores, torch.full_like(scores, floor))
            probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
            attended = torch.matmul(probs, repeat_kv(value, groups))
            attended = attended.transpose(1, 2).reshape(normed.shape[0], new_len, -1)
            hidden_BTD = residual + attention.o_proj(attended)
            hidden_BTD = hidden_BTD + layer.mlp(layer.post_attention_layernorm(hidden_BTD))
        # A 2-D `linear` exports as Gemm(transB=1), which reads the (possibly tied) embedding
        # matrix as stored; a 3-D one would add a transposed copy of it to the file.
        batch = hidden_BTD.shape[0]
        flat_ND = inner.norm(hidden_BTD).reshape(batch * new_len, -1)
        logits_NV = torch.nn.functional.linear(flat_ND, self.model.lm_head.weight)
        return (logits_NV.reshape(batch, new_len, -1).float(), *present)


def example_inputs(model: Any, batch: int = 2, new_len: int = 3, past_len: int = 2):
    """Tracing inputs with a non-empty past, so no shape is specialised to 0 or 1."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    input_ids = torch.randint(0, config.vocab_size, (batch, new_len))
    attention_mask = torch.ones(batch, past_len + new_len, dtype=torch.long)
    position_ids = torch.arange(past_len, past_len + new_len)[None].repeat(batch, 1)
    dtype = next(model.parameters()).dtype
    past = [
        torch.zeros(batch, config.num_key_value_heads, past_len, head_dim, dtype=dtype)
        for _ in range(2 * config.num_hidden_layers)
    ]
    return (input_ids, attention_mask, position_ids, *past)


def dynamic_axes(num_layers: int) -> dict[str, dict[int, str]]:
    past, present = kv_names(num_layers)
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for name in past:
        axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in present:
        axes[name] = {0: "batch_size", 2: "total_sequence_length"}
    return axes
