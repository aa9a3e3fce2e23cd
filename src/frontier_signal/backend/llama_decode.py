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
  a step is bound by streaming the weights, so half the bytes is about twice the speed;
- for a model that shipped as a 4-bit GGUF (the bundled SmolLM2 is Q4_1), the GGUF's own 4-bit
  codes (`LlamaWeights.pack_4bit`, recovered exactly from the de-quantized weights) through our
  4-bit kernel (csrc/int4_linear.cpp; torch's group-wise int4 kernel where the CPU lacks
  AVX512-BF16): the file's values rounded to bf16, in a quarter of the bf16 bytes.

On CPU with bf16 activations, once `backend/native.py` has loaded our C++ decode layers, a step
runs every layer in one op call (`native.NativeStep`; each run's LoRA terms in bf16) and the
loop here (`_layers`) is the fallback and the reference the tests compare it with.

It covers Llama-family models only (`supports`); anything else uses the HF forward. It does no
prefill: the prompt goes through the HF forward and its cache is copied in. No gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F

from frontier_signal.backend import decode_4bit, decode_head, native
from frontier_signal.backend.decode_head import HEADS, Head
from frontier_signal.backend.decode_lora import GROUPS, LoraPlan, add_lora, lora_dtype
from frontier_signal.backend.decode_threads import DecodeThreadGovernor
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


# A base matmul: (weight, bias); int8 weight-only (int8 weight, per-row scales, bias); or 4-bit
# group-wise (`decode_4bit.Packed`: codes, block scales, bias).
Matmul = (
    tuple[torch.Tensor, torch.Tensor | None]
    | tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
)
# torch's 4-bit kernel de-quantizes per row: up to about 12 rows it beat the bf16 GEMM on this
# CPU (measured: 16 µs vs 46 µs at 1 row, equal near 8-12, 1.5x slower at 16), so bigger batches
# decode with the bf16 weights (as close to the file's values, docs/engine.md). Ours
# (decode_4bit) gives those weights' own values; its crossover was not re-measured.
MAX_4BIT_ROWS = 12


def _quantize_int8(weight: torch.Tensor, bias: torch.Tensor | None) -> Matmul:
    """Symmetric per-output-row int8, the layout `aten._weight_int8pack_mm` takes."""
    scales = weight.float().abs().amax(1).clamp_min(1e-12) / 127
    quantized = torch.round(weight.float() / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return quantized, scales.to(weight.dtype), bias


def _matmul(x: torch.Tensor, matmul: Matmul | Head) -> torch.Tensor:
    if isinstance(matmul, HEADS):
        return matmul(x)
    if len(matmul) == 2:
        return F.linear(x, *matmul)
    if matmul[0].dtype == torch.uint8 and matmul[1].dtype == torch.float32:  # 4-bit, ours
        return cast(Any, native.ops()).int4_linear(x, *matmul)  # only packed where it loaded
    if matmul[0].dtype == torch.uint8:  # 4-bit, torch's layout
        packed, scales_zeros, bias = matmul
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, decode_4bit.GROUP, scales_zeros)
        return y if bias is None else y + bias
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
        # A transformers Llama model: its attributes are untyped to torch (Tensor | Module).
        self.model: Any = cast(Any, model)
        config = self.model.config
        self.num_heads: int = config.num_attention_heads
        self.num_kv_heads: int = config.num_key_value_heads
        self.head_dim: int = (
            getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        )
        self.eps: float = config.rms_norm_eps
        self.embed: torch.Tensor = self.model.model.embed_tokens.weight
        self.final_norm: torch.Tensor = self.model.model.norm.weight
        self.lm_head = layers["lm_head"]
        # Per layer, per fused group, the LoraLinears in fused order (what LoRA plans index).
        self.group_linears: list[dict[str, list[LoraLinear]]] = []
        self.layers: list[LayerWeights] = []
        with torch.no_grad():
            for index, block in enumerate(self.model.model.layers):
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
        self.threads = DecodeThreadGovernor()  # decode steps' torch thread count, by measurement
        self.int8_layers: list[dict[str, Matmul]] | None = None
        self.int8_head: Matmul | Head | None = None
        # The 4-bit and int8 modes read the lm_head in 8 bits (`decode_head`); False: bf16.
        self.head_8bit = True
        self.layers_4bit: list[dict[str, Matmul]] | None = None  # None: not tried yet
        self.packed_4bit = 0

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
        self.quantized_head()

    def quantized_head(self) -> Matmul | Head:
        """The lm_head in 8 bits (built once): where our bf16 kernels run, codes whose top
        logits are made exact (`decode_head.CheckedHead`), else fbgemm's dynamic int8 linear,
        else int8 weight-only (`_weight_int8pack_mm`)."""
        if self.int8_head is None:
            weight, bias = self.head[0], self.head[1]
            with torch.no_grad():
                self.int8_head = decode_head.build(weight, bias) or _quantize_int8(weight, bias)
        return self.int8_head

    def pack_4bit(self, source: Callable[[str], torch.Tensor | None]) -> int:
        """Decode with the 4-bit codes a GGUF stored (bf16 activations on CPU only).

        `source(name)` gives a weight as the de-quantized fp32 file has it (e.g.
        `model.layers.0.mlp.up_proj.weight`), or None. A fused group whose weights are not all
        exact Q4_1 keeps its bf16 matmul. Returns how many groups went 4-bit (0: none).
        """
        if self.layers_4bit is not None:
            return self.packed_4bit
        packed_groups = 0
        layers_4bit: list[dict[str, Matmul]] = []
        with torch.no_grad():
            for index, layer in enumerate(self.layers):
                groups: dict[str, Matmul] = {}
                for group, matmul in layer.matmuls.items():
                    parts = []
                    for path in GROUPS[group]:
                        weight = source(f"model.layers.{index}.{path}.weight")
                        part = None if weight is None else decode_4bit.recover(weight)
                        if part is None:
                            break
                        parts.append(part)
                    else:
                        groups[group] = decode_4bit.pack(parts, matmul[1])
                        packed_groups += 1
                        continue
                    groups[group] = matmul
                layers_4bit.append(groups)
        self.layers_4bit = layers_4bit if packed_groups else []
        self.packed_4bit = packed_groups
        if packed_groups and self.head_8bit:
            self.quantized_head()  # built here, not in the first request's decode
        return packed_groups

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
        mode: str = "exact",
    ):
        first = hf_cache.layers[0].keys
        batch, _, padded_len, _ = first.shape
        self.w = weights
        self.batch = batch
        self.length = padded_len  # next cache slot, the same for every row (left padding)
        capacity = padded_len + max_new_tokens
        kv_heads, head_dim = weights.num_kv_heads, weights.head_dim
        # Keys and values of a layer side by side ([.., 2, kv_heads, ..]): a step writes both
        # with one copy (RoPE runs over q|k|v, the value heads rotated by 0, `_rope_step`).
        self.kv = first.new_empty((len(weights.layers), batch, 2, kv_heads, capacity, head_dim))
        self.keys, self.values = self.kv[:, :, 0], self.kv[:, :, 1]
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
        self.matmuls = [layer.matmuls for layer in weights.layers]
        self.mode = mode
        self.head: Matmul | Head = weights.head
        if mode == "int8":
            assert weights.int8_layers is not None
            self.matmuls = weights.int8_layers
        elif mode == "4bit":
            assert weights.layers_4bit
            self.matmuls = weights.layers_4bit
        if mode != "exact" and weights.head_8bit:
            self.head = weights.quantized_head()
        ops = native.ops(wait=False) if device.type == "cpu" and dtype == torch.bfloat16 else None
        terms = lora_dtype(dtype, device)
        self.native: native.NativeStep | None = None
        if ops is not None:
            # LoRA weights in bf16 (as the training forward uses them), summed in fp32: half
            # the bytes of fp32 terms, which a batch-1 step spends most of its LoRA time reading.
            self.lora = weights.lora.native_terms(segments, dtype, terms)
            self.native = native.NativeStep(
                ops, weights, self.matmuls, self.lora, self.kv, self.cos, self.sin, self.valid
            )
        else:
            self.lora = weights.lora.for_segments(segments, terms)

    def _linear(self, x, matmul: Matmul | Head, plan) -> torch.Tensor:
        return add_lora(_matmul(x, matmul), x, plan)

    def step(self, token_ids_B: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, V] (fp32) after `token_ids_B`; on CPU with the thread count
        the weights' `DecodeThreadGovernor` picks for this mode and batch size."""
        if self.keys.device.type != "cpu":
            return self._step(token_ids_B)
        return self.w.threads.run((self.mode, self.batch), lambda: self._step(token_ids_B))

    def _rope_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's cos and sign-folded sin over every head of q|k|v, [B, heads, head_dim]:
        the value heads get cos 1 and sin 0, so v * 1 + roll(v) * 0 leaves them exact."""
        w = self.w
        batch, rotated = self.batch, w.num_heads + w.num_kv_heads
        cos = self.cos[self.positions][:, None].expand(batch, rotated, w.head_dim)
        sin = self.sin[self.positions][:, None].expand(batch, rotated, w.head_dim)
        self.positions += 1
        values = (batch, w.num_kv_heads, w.head_dim)
        return torch.cat([cos, cos.new_ones(values)], 1), torch.cat([sin, sin.new_zeros(values)], 1)

    @torch.no_grad()
    def _step(self, token_ids_B: torch.Tensor) -> torch.Tensor:
        w = self.w
        slot = self.length
        self.length += 1
        x = F.embedding(token_ids_B, w.embed)  # [B, D]
        if self.native is not None:
            x = self.native(x, slot, self.positions)
            self.positions += 1
        else:
            x = self._layers(x, slot)
        h = _rms_norm(x, w.final_norm, w.eps)
        if self.native is not None and not isinstance(self.head, HEADS) and len(self.head) == 2:
            logits = add_lora(self.native.linear(h, *self.head), h, self.lora[-1]["lm_head"])
            return logits.float()
        return self._linear(h, self.head, self.lora[-1]["lm_head"]).float()

    def _layers(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        w = self.w
        cos, sin = self._rope_step()
        mask = None if self.valid is None else self.valid[..., : slot + 1]
        for index, layer in enumerate(w.layers):
            plan, matmuls = self.lora[index], self.matmuls[index]
            h = _rms_norm(x, layer.input_norm, w.eps)
            qkv = self._linear(h, matmuls["qkv"], plan["qkv"])
            attn = self._attend(index, qkv, cos, sin, slot, mask)
            x = x + self._linear(attn, matmuls["o"], plan["o"])
            h = _rms_norm(x, layer.post_norm, w.eps)
            gate_up = self._linear(h, matmuls["gate_up"], plan["gate_up"])
            half = gate_up.shape[-1] // 2
            act = F.silu(gate_up[:, :half]) * gate_up[:, half:]
            x = x + self._linear(act, matmuls["down"], plan["down"])
        return x

    def _attend(self, index: int, qkv, cos, sin, slot: int, mask) -> torch.Tensor:
        """RoPE, this token's keys and values into the cache, attention: [B, heads * head_dim]."""
        w = self.w
        heads, kv_heads, head_dim, batch = w.num_heads, w.num_kv_heads, w.head_dim, self.batch
        every = qkv.view(batch, heads + 2 * kv_heads, head_dim)
        # Two products then a sum, each rounded, as HF's apply_rotary_pos_emb (not addcmul).
        every = every * cos + every.roll(head_dim // 2, -1) * sin
        self.kv[index, :, :, :, slot] = every[:, heads:].view(batch, 2, kv_heads, head_dim)
        # [B, kv_heads, group, head_dim]: the group's query heads act as query positions.
        query = every[:, :heads].view(batch, kv_heads, heads // kv_heads, head_dim)
        cached = self.kv[index, :, :, :, : slot + 1]
        attn = F.scaled_dot_product_attention(query, cached[:, 0], cached[:, 1], attn_mask=mask)
        return attn.reshape(batch, heads * head_dim)
