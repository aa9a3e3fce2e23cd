"""The decode step's output projection (`lm_head`) in 8 bits, for the quantized decode modes.

At batch 1 the bf16 `lm_head` of a small model is the biggest single read of a step (SmolLM2-135M:
49,152 x 576, 56.6 MB, ~30 % of a 4-bit step). `Int8Head` keeps it as int8 codes with one scale
per output row and multiplies through fbgemm's dynamic int8 linear (the activation row is
quantized to 8 bits on the fly, the products accumulate in int32, VNNI where the CPU has it):
measured on this 2-core machine 1.8 ms where the bf16 matvec took 8.2 ms and
`aten._weight_int8pack_mm` 8.0 ms in the same run (loaded machine). That is llama.cpp's own
recipe for its Q8_0 output tensor (8-bit weights, 8-bit activations), with per-row rather than
per-32 scales.

It is used only where decode already trades exactness for speed (the 4-bit and int8 modes); the
exact mode keeps the bf16 weights. The logits then differ from the bf16 head's by about 1e-2
(the tests bound it). CPU only; where the quantized engine is missing it is not built.
"""

from __future__ import annotations

import warnings

import torch


def available() -> bool:
    """True where fbgemm's (or its x86 successor's) dynamic int8 linear can run."""
    engines = torch.backends.quantized.supported_engines
    return hasattr(torch.ops.quantized, "linear_dynamic") and (
        "x86" in engines or "fbgemm" in engines
    )


class Int8Head:
    """`y = x @ W.T + b` with W as per-row int8 (symmetric) and x quantized per call; fp32 out."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        with torch.no_grad():
            full = weight.detach().float()
            rows = full.shape[0]
            scales = (full.abs().amax(1).clamp_min(1e-12) / 127).double()
            zero_points = torch.zeros(rows, dtype=torch.long)
            with warnings.catch_warnings():  # quantized tensors are deprecated, still the API
                warnings.simplefilter("ignore")
                codes = torch.quantize_per_channel(full, scales, zero_points, 0, torch.qint8)
                self.packed = torch.ops.quantized.linear_prepack(
                    codes, None if bias is None else bias.detach().float()
                )
        self.out_features = rows

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # reduce_range=False: full 8-bit activations (no overflow with VNNI's int32 sums).
        return torch.ops.quantized.linear_dynamic(x.float(), self.packed, False)
