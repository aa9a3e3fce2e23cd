"""The decode step's output projection (`lm_head`) in 8 bits, for the quantized decode modes.

At batch 1 the bf16 `lm_head` of a small model is the biggest single read of a step (SmolLM2-135M:
49,152 x 576, 56.6 MB, ~30 % of a 4-bit step). Two ways to read half of it:

- `CheckedHead` (where our ops' AVX512-BF16 build runs): one-byte codes, one scale per output
  row, multiplied with the bf16 activations in our kernel (`csrc/int8_head.cpp`); then every
  token whose logit could still be the largest, by a proven bound on the codes' error, gets the
  bf16 head's own logit. The greedy token and its logit are the exact head's, bit for bit, at
  the 8-bit head's speed (measured in one process: 6.5 vs 6.7 ms a bare batch-1 step, 28.3 vs
  27.7 ms a step of 8 runs, against `Int8Head`). Greedy agreement of the 4-bit decode with HF
  bf16 over 8 prompts x 64 tokens went from 37.3 % to 76.8 %, that of the exact decode; the
  sampling distribution's total variation from the bf16 head's from 0.025 to 0.002 on average
  (`bench/decode_head.py`).
- `Int8Head` (elsewhere, where fbgemm runs): int8 codes through fbgemm's dynamic int8 linear
  (the activation row quantized to 8 bits on the fly, int32 sums, VNNI where the CPU has it):
  1.8 ms where a bf16 matvec took 8.2 ms on a loaded machine; llama.cpp's own recipe for its
  Q8_0 output tensor. Its logits differ from the bf16 head's by up to ~1.3 on SmolLM2.

Either is used only where decode already trades exactness for speed (the 4-bit and int8 modes);
the exact mode keeps the bf16 weights. CPU only.
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


class CheckedHead:
    """The lm_head as int8 codes (one scale per output row) whose top logits are made exact.

    `csrc/int8_head.cpp`: every logit from the codes (bf16 activations, fp32 sums), a bound on
    each one's error, and the tokens that could be the bf16 head's argmax recomputed from the
    bf16 rows as the exact decode computes them. Greedy decoding then picks the exact head's
    token while reading half its bytes; the other logits keep their 8-bit values. Needs our
    ops' AVX512-BF16 build, bf16 weights and K a multiple of 64 (`build` checks).
    """

    def __init__(self, ops, weight: torch.Tensor, bias: torch.Tensor | None):
        with torch.no_grad():
            full = weight.detach().float()
            self.scales = (full.abs().amax(1).clamp_min(1e-30) / 63).contiguous()
            codes = torch.round(full / self.scales[:, None]).clamp(-63, 63) + 64  # 7 bits
            # Per block of 64 inputs, the byte order the kernel's unpacks read back in order.
            blocks = codes.to(torch.uint8).view(full.shape[0], -1, 2, 4, 8).transpose(2, 3)
            self.codes = blocks.reshape(full.shape).contiguous()
        self.weight = weight.detach().contiguous()  # the rows the re-check reads (no copy)
        self.bias = None if bias is None else bias.detach()
        self.ops = ops
        self.out_features = weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.int8_head(
            x.to(self.weight.dtype).contiguous(), self.codes, self.scales, self.weight, self.bias
        )


Head = Int8Head | CheckedHead
HEADS = (Int8Head, CheckedHead)


def build(weight: torch.Tensor, bias: torch.Tensor | None) -> Head | None:
    """The 8-bit head for `weight` [V, K]: `CheckedHead` where our ops' AVX512-BF16 build runs
    (a bf16 CPU weight, K a multiple of 64; waits for the ops' load, so the head does not depend
    on how soon a first request came), else `Int8Head` where fbgemm runs (CPU), else None."""
    if weight.device.type != "cpu":
        return None
    from frontier_signal.backend import native  # native imports the decode path

    if weight.dtype == torch.bfloat16 and weight.shape[1] % 64 == 0:
        ops = native.with_bf16_kernels(native.ops())
        if ops is not None:
            return CheckedHead(ops, weight, bias)
    if available():
        try:
            return Int8Head(weight, bias)
        except (RuntimeError, AttributeError):  # quantized ops gone or refused
            return None
    return None
