"""A compact Llama decode step over a preallocated KV cache: the fast path of sampling.

At batch 1 the HF forward spends most of a step in Python and bookkeeping (mask building, cache
objects, module dispatch), not in the matmuls. This step runs one token per row through the same
weights with about twenty torch ops per layer:

- fused q|k|v and gate|up matmuls: the base weights become row views of one fused tensor, so
  training, checkpoints and the HF forward keep working and no memory is added;
- each run's LoRA term added per fused group (`decode_lora.LoraPlan`);
- RoPE from a table precomputed by the model's own rotary module (every static RoPE type);
- GQA attention by `scaled_dot_product_attention` over a static cache, the query heads of one
  KV head folded into the query-length axis so no key/value head is repeated;
- optionally (`LlamaWeights.quantize_int8`) int8 weight-only copies of the matmuls: at batch 1
  a step is bound by streaming the weights, so half the bytes is about twice the speed.

It covers Llama-family models only (`supports`); anything else uses the HF forward. It does no
prefill: the prompt goes through the HF forward and its cache is copied in. No gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from frontier_signal.backend.decode_lora import GROUPS, JointTerm, LoraPlan
from frontier_signal.backend.lora import LoraLinear

STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # cos/sin depend on position only


def supports(model: torch.nn.Module) -> bool:
    """True when `model` is a Llama-family causal LM this decode step reproduces exactly."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", "") != "llama":
        return False
    rope = getattr(config, "rope_parameters", None) or {}
    return config.hidden_act == "silu" and rope.get("rope_type", "default") in STATIC_ROPE_TYPES


def _fuse(linears: list[LoraLinear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for linears sharing an input; theirs become views into it."""
    weight = torch.cat([layer.base.weight.detach() for layer in linears])
    biases = [layer.base.bias for layer in linears]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    if bias is None and any(b is not None for b in biases):
        raise ValueError("cannot fuse linears where only some have a bias")
    start = 0
    for layer in linears:
        end = start + layer.out_features
        layer.base.weight.data = weight[start:end]
        if bias is not None:
            layer.base.bias.data = bias[start:end]
        start = end
    return weight, bias


# A base matmul: (weight, bias), or int8 weight-only (int8 weight, per-row scales, bias).
Matmul = tuple[torch.Tensor, ...]


def _quantize_int8(weight: torch.Tensor, bias: torch.Tensor | None) -> Matmul:
    """Symmetric per-output-row int8, the layout `aten._weight_int8pack_mm` takes."""
    scales = weight.float().abs().amax(1).clamp_min(1e-12) / 127
    quantized = torch.round(weight.float() / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return quantized, scales.to(weight.dtype), bias


def _matmul(x: torch.Tensor, matmul: Matmul) -> torch.Tensor:
    if len(matmul) == 2:
        return F.linear(x, *matmul)
    quantized, scales, bias = matmul
    y = torch.ops.aten._weight_int8pack_mm(x, quantized, scales)
    return y if bias is None else y + bias


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    matmuls: dict[str, Matmul]  # by fused group name (decode_lora.GROUPS)


class LlamaWeights:
    """The decode view of one loaded Llama model (built once per base model)."""

    def __init__(self, model: torch.nn.Module, layers: dict[str, LoraLinear]):
        config = model.config
        self.model = model
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = config.rms_norm_eps
        self.embed = model.model.embed_tokens.weight
        self.final_norm = model.model.norm.weight
        self.lm_head = layers["lm_head"]
        # Per layer, per fused group, the LoraLinears in fused order (what LoRA plans index).
        self.group_linears: list[dict[str, list[LoraLinear]]] = []
        self.layers: list[LayerWeights] = []
        with torch.no_grad():
            for index, block in enumerate(model.model.layers):
                prefix = f"model.layers.{index}."
                linears = {
                    group: [layers[prefix + path] for path in paths]
                    for group, paths in GROUPS.items()
                }
                self.group_linears.append(linears)
                self.layers.append(
                    LayerWeights(
                        block.input_layernorm.weight,
                        block.post_attention_layernorm.weight,
                        {group: _fuse(linears[group]) for group in GROUPS},
                    )
                )
        self.head: Matmul = (self.lm_head.base.weight, self.lm_head.base.bias)
        self.lora = LoraPlan(self)
        self.int8_layers: list[dict[str, Matmul]] | None = None
        self.int8_head: Matmul | None = None

    def quantize_int8(self) -> None:
        """Add int8 weight-only copies of every decode matmul (CPU; ~half the bf16 bytes).

        Decoding streams every weight once per token and is memory-bound at batch 1, so half the
        bytes is about twice the speed; outputs then differ slightly from the exact weights.
        """
        if self.int8_layers is not None:
            return
        with torch.no_grad():
            self.int8_layers = [
                {group: _quantize_int8(*matmul) for group, matmul in layer.matmuls.items()}
                for layer in self.layers
            ]
            self.int8_head = _quantize_int8(*self.head)

    def rope_tables(self, length: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin [length, head_dim]: rotate_half(x) * sin == roll(x) * sin'."""
        positions = torch.arange(length, device=device)[None]
        probe = torch.empty(0, device=device, dtype=dtype)
        cos, sin = self.model.model.rotary_emb(probe, positions)
        half = self.head_dim // 2
        sign = torch.ones(self.head_dim, device=device, dtype=dtype)
        sign[:half] = -1
        return cos[0], sin[0] * sign


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # As LlamaRMSNorm: normalise in fp32, round to the activation dtype, then scale.
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype) * weight


class LlamaDecoder:
    """Static-cache decode state for one batch; `step(tokens)` → next-token logits [B, V]."""

    def __init__(
        self,
        weights: LlamaWeights,
        hf_cache,
        prompt_lengths: list[int],
        max_new_tokens: int,
        segments,
        int8: bool = False,
    ):
        first = hf_cache.layers[0].keys
        batch, _, padded_len, _ = first.shape
        self.w = weights
        self.batch = batch
        self.length = padded_len  # next cache slot, the same for every row (left padding)
        capacity = padded_len + max_new_tokens
        shape = (len(weights.layers), batch, weights.num_kv_heads, capacity, weights.head_dim)
        self.keys = first.new_empty(shape)
        self.values = first.new_empty(shape)
        for index, layer in enumerate(hf_cache.layers):
            self.keys[index, :, :, :padded_len] = layer.keys
            self.values[index, :, :, :padded_len] = layer.values
        device, dtype = first.device, first.dtype
        self.cos, self.sin = weights.rope_tables(capacity, device, dtype)
        lengths = torch.tensor(prompt_lengths, device=device)
        self.positions = lengths.clone()  # each row's next position (its own prompt length)
        pads = padded_len - lengths
        # Left padding is masked out of every later step; without padding no mask at all (the
        # fast SDPA path with no mask tensor).
        self.valid = None
        if int(pads.max()) > 0:
            slots = torch.arange(capacity, device=device)
            self.valid = (slots[None] >= pads[:, None])[:, None, None, :]
        self.lora = weights.lora.for_segments(segments, dtype)
        self.matmuls = [layer.matmuls for layer in weights.layers]
        self.head = weights.head
        if int8:
            assert weights.int8_layers is not None and weights.int8_head is not None
            self.matmuls, self.head = weights.int8_layers, weights.int8_head

    def _linear(self, x, matmul: Matmul, plan) -> torch.Tensor:
        y = _matmul(x, matmul)
        if isinstance(plan, JointTerm):
            return plan.add_to(y, x)
        for A, B_t, start, end in plan:
            if start == 0 and end == x.shape[0]:
                y.addmm_(F.linear(x, A), B_t)
            else:
                y[start:end].addmm_(F.linear(x[start:end], A), B_t)
        return y

    @torch.no_grad()
    def step(self, token_ids_B: torch.Tensor) -> torch.Tensor:
        w = self.w
        heads, kv_heads, head_dim = w.num_heads, w.num_kv_heads, w.head_dim
        batch, group = self.batch, heads // kv_heads
        slot = self.length
        self.length += 1
        cos = self.cos[self.positions][:, None]  # [B, 1, head_dim], broadcast over heads
        sin = self.sin[self.positions][:, None]
        self.positions += 1
        mask = None if self.valid is None else self.valid[..., : slot + 1]
        qk_width = (heads + kv_heads) * head_dim
        x = F.embedding(token_ids_B, w.embed)  # [B, D]
        for index, layer in enumerate(w.layers):
            plan, matmuls = self.lora[index], self.matmuls[index]
            h = _rms_norm(x, layer.input_norm, w.eps)
            qkv = self._linear(h, matmuls["qkv"], plan["qkv"])
            qk = qkv[:, :qk_width].view(batch, heads + kv_heads, head_dim)
            # Two products then a sum, each rounded, as HF's apply_rotary_pos_emb (not addcmul).
            qk = qk * cos + qk.roll(head_dim // 2, -1) * sin
            keys, values = self.keys[index], self.values[index]
            keys[:, :, slot] = qk[:, heads:]
            values[:, :, slot] = qkv[:, qk_width:].view(batch, kv_heads, head_dim)
            # [B, kv_heads, group, head_dim]: the group's query heads act as query positions.
            query = qk[:, :heads].view(batch, kv_heads, group, head_dim)
            attn = F.scaled_dot_product_attention(
                query, keys[:, :, : slot + 1], values[:, :, : slot + 1], attn_mask=mask
            )
            x = x + self._linear(attn.reshape(batch, heads * head_dim), matmuls["o"], plan["o"])
            h = _rms_norm(x, layer.post_norm, w.eps)
            gate_up = self._linear(h, matmuls["gate_up"], plan["gate_up"])
            half = gate_up.shape[-1] // 2
            act = F.silu(gate_up[:, :half]) * gate_up[:, half:]
            x = x + self._linear(act, matmuls["down"], plan["down"])
        h = _rms_norm(x, w.final_norm, w.eps)
        return self._linear(h, self.head, self.lora[-1]["lm_head"]).float()
