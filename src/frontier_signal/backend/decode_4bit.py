"""A GGUF Q4_1 weight as 4-bit codes for decoding (`llama_decode.LlamaWeights.pack_4bit`).

The bundled SmolLM2 ships as a Q4_1 GGUF; its conversion to safetensors de-quantized every block
of 32 weights into `code * d + m` in fp32. `recover` reads the codes, d and m back out of those
values (only where they give back every value bit for bit); `pack` lays them out for our kernel
(csrc/int4_linear.cpp) where the CPU has AVX512-BF16, else for torch's int4 kernel.
"""

from __future__ import annotations

import torch

from frontier_signal.backend import native

GROUP = 32  # GGUF's block size
# (codes, block scales, bias): our layout (uint8 codes, fp32 [N, K/32, 2] d and m) or torch's
# (its packed codes, bf16 [K/32, N, 2] scales and zeros).
Packed = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def recover(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The 4-bit codes of a de-quantized GGUF Q4_1 weight, or None when it is not one.

    Q4_1 stores each block of 32 input weights as `code * d + m` (codes 0..15, fp16 d and m,
    m the block minimum, so the minimum has code 0 and the maximum code 15). Returns (codes
    [N, K] int32, d [N, K/32], m [N, K/32]) only when they give back every value bit for bit.
    """
    if weight.dim() != 2 or weight.shape[1] % GROUP or weight.dtype != torch.float32:
        return None
    rows, cols = weight.shape
    blocks = weight.view(rows, cols // GROUP, GROUP)
    low = blocks.amin(-1)
    step = ((blocks.amax(-1) - low) / 15).half().float()
    safe = torch.where(step > 0, step, torch.ones_like(step))
    codes = torch.round((blocks - low[..., None]) / safe[..., None]).clamp(0, 15)
    codes = torch.where(step[..., None] > 0, codes, torch.zeros_like(codes))
    if not torch.equal(codes * step[..., None] + low[..., None], blocks):
        return None
    return codes.view(rows, cols).to(torch.int32), step, low


def pack(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], bias) -> Packed:
    """Fused rows of recovered 4-bit weights, for our `int4_linear` (csrc/int4_linear.cpp)
    where the CPU has AVX512-BF16: codes two to a byte and each block's exact d and m in fp32,
    w = bf16(code * d + m). Elsewhere the layout `_weight_int4pack_mm_for_cpu` takes:
    w = (code - 8) * scale + zero, with zero = m + 8 d (rounded once, to bf16)."""
    codes = torch.cat([c for c, _, _ in parts])
    step = torch.cat([d for _, d, _ in parts])
    low = torch.cat([m for _, _, m in parts])
    if our_kernel():
        blocks = codes.view(codes.shape[0], -1, 2, GROUP // 2).to(torch.uint8)
        nibbles = (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).reshape(codes.shape[0], -1)
        return nibbles.contiguous(), torch.stack([step, low], -1).contiguous(), bias
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    scales_zeros = torch.stack([step, low + 8 * step], -1).transpose(0, 1).contiguous()
    return packed, scales_zeros.to(torch.bfloat16), bias


def our_kernel() -> bool:
    """Whether our 4-bit kernel runs here (waits for the native ops' load: the layout chosen
    must not depend on how soon a first request came)."""
    return native.with_bf16_kernels(native.ops()) is not None
