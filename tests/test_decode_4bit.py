"""Decoding with a GGUF's own 4-bit codes (backend/llama_decode.py): exact recovery of Q4_1
codes from de-quantized weights, and the 4-bit decode step against the bf16 one."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.backend.decode_4bit import GROUP as GROUP_4BIT
from frontier_signal.backend.decode_4bit import recover as recover_4bit
from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import TINY


def q4_1(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A weight as a Q4_1 GGUF de-quantizes: code * d + m per block of 32, fp16 d and m, every
    block using codes 0 and 15 (its minimum and maximum), in fp32."""
    generator = torch.Generator().manual_seed(seed)
    blocks = cols // GROUP_4BIT
    codes = torch.randint(0, 16, (rows, blocks, GROUP_4BIT), generator=generator).float()
    codes[..., 0], codes[..., 1] = 0, 15
    step = (torch.rand(rows, blocks, 1, generator=generator) * 0.01 + 1e-3).half().float()
    low = (torch.randn(rows, blocks, 1, generator=generator) * 0.05).half().float()
    return (codes * step + low).view(rows, cols)


def test_q4_1_codes_come_back_bit_for_bit_and_anything_else_is_refused():
    weight = q4_1(8, 64)
    codes, step, low = recover_4bit(weight)
    assert codes.dtype == torch.int32 and int(codes.min()) == 0 and int(codes.max()) == 15
    rebuilt = codes.view(8, 2, GROUP_4BIT).float() * step[..., None] + low[..., None]
    assert torch.equal(rebuilt.view(8, 64), weight)
    assert recover_4bit(torch.randn(8, 64)) is None  # ordinary weights
    assert recover_4bit(q4_1(8, 64)[:, :48]) is None  # not whole blocks
    assert recover_4bit(weight.bfloat16()) is None  # only the fp32 de-quantized values count
    flat = weight.clone()
    flat[0, :GROUP_4BIT] = 0.5  # a constant block: step 0, codes 0
    assert recover_4bit(flat) is not None


def install_q4_1(base, seed: int = 0) -> int:
    """Give every decode matmul of `base` Q4_1 weights (`q4_1`) and pack their 4-bit codes;
    returns how many fused groups went 4-bit."""
    from frontier_signal.backend.decode_lora import GROUPS

    source = {}
    with torch.no_grad():
        for index in range(len(base.model.model.layers)):
            for paths in GROUPS.values():
                for offset, path in enumerate(paths):
                    name = f"model.layers.{index}.{path}"
                    linear = base.layers[name].base
                    weight = q4_1(*linear.weight.shape, seed=seed + index * 10 + offset)
                    linear.weight.copy_(weight.to(linear.weight.dtype))
                    source[f"{name}.weight"] = weight
    return base.decode_weights().pack_4bit(source.get)


@pytest.fixture(scope="module")
def q4_engine():
    """A bf16 engine whose tiny model has Q4_1 weights in every decode matmul, packed 4-bit."""
    from frontier_signal.backend.decode_lora import GROUPS
    from frontier_signal.engine.engine import Engine

    engine = Engine(device="cpu", dtype="bfloat16")
    base = engine.load_model(TINY)
    packed = install_q4_1(base)
    assert packed == len(base.model.model.layers) * len(GROUPS)
    base.decode_4bit, base.decode_4bit_ready = True, True
    return engine, base


def test_the_4bit_step_gives_the_bf16_steps_log_probs(q4_engine):
    engine, base = q4_engine
    prompt = engine.tokenizer(TINY)("The capital of Zorbia is", add_special_tokens=False)
    params = SamplingParams(max_tokens=6, temperature=0, top_logprobs=10)
    request = SampleRequest(TINY, list(prompt["input_ids"]), params)
    assert base.decode_mode == "4bit"
    four = engine.sample(request).sequences[0]
    base.decode_4bit = False
    try:
        assert base.decode_mode == "exact"
        exact = engine.sample(request).sequences[0]
    finally:
        base.decode_4bit = True
    # Same prefill, so the same first token; the 4-bit step's distribution over the next one
    # matches the bf16 step's within bf16 rounding.
    assert four.tokens[:2] == exact.tokens[:2]
    alternatives = dict(exact.top_logprobs[1])
    compared = [(lp, alternatives[t]) for t, lp in four.top_logprobs[1] if t in alternatives]
    assert len(compared) >= 5
    assert max(abs(a - b) for a, b in compared) < 0.02


def test_a_model_that_is_not_a_gguf_decodes_its_exact_weights():
    from frontier_signal.engine.engine import Engine

    engine = Engine(device="cpu", dtype="bfloat16")  # 4-bit decode on by default
    base = engine.load_model(TINY)
    base.decode_weights()
    # bf16 on CPU, so only the source decides: the tiny model has no GGUF to recover codes from.
    assert base.decode_4bit and base.decode_4bit_ready is False
    assert base.decode_mode == "exact"


@pytest.mark.parametrize(("rows", "cols"), [(96, 64), (40, 1536)])
def test_our_4bit_kernel_multiplies_the_rounded_weights_and_each_row_as_alone(
    native_ops, rows, cols
):
    """`int4_linear` (csrc/int4_linear.cpp) against the same weights de-quantized in torch
    (code * d + m, rounded to bf16): equal up to the output's bf16 rounding, with a bias, for
    row counts inside one pass, a full one and beyond; each row bit for bit what it gets alone
    (a request decodes the same tokens in a batch as by itself)."""
    from frontier_signal.backend import decode_4bit, llama_decode

    if not native_ops.has_bf16_kernel():
        pytest.skip("our 4-bit layout is used only where the CPU has AVX512-BF16")
    weight = q4_1(rows, cols, seed=7)
    part = recover_4bit(weight)
    bias = torch.randn(rows).bfloat16()
    matmul = decode_4bit.pack([part], bias)
    assert matmul[0].dtype == torch.uint8 and matmul[1].dtype == torch.float32  # our layout
    reference = weight.bfloat16().float()
    for count in (1, 3, 8, 11):
        x = torch.randn(count, cols, generator=torch.Generator().manual_seed(count)).bfloat16()
        y = llama_decode._matmul(x, matmul)
        expected = x.float() @ reference.T + bias.float()
        torch.testing.assert_close(y.float(), expected, rtol=8e-3, atol=1e-3 * expected.abs().max())
        alone = torch.cat([llama_decode._matmul(x[i : i + 1], matmul) for i in range(count)])
        assert torch.equal(alone, y)


def test_our_4bit_step_decodes_exactly_what_the_bf16_weights_do(q4_engine, native_ops):
    """The model's bf16 weights are the file's values rounded to bf16, and so are the weights
    our kernel builds from the codes, summed in the same order as the exact kernel: with the
    bf16 lm_head, 4-bit decode gives the exact decode's log-probs bit for bit (a quarter of
    the bytes, nothing traded)."""
    if not native_ops.has_bf16_kernel():
        pytest.skip("our 4-bit layout is used only where the CPU has AVX512-BF16")
    engine, base = q4_engine
    prompt = engine.tokenizer(TINY)("The capital of Zorbia is", add_special_tokens=False)
    params = SamplingParams(max_tokens=8, temperature=0, top_logprobs=5)
    request = SampleRequest(TINY, list(prompt["input_ids"]), params)
    weights = base.decode_weights()
    weights.head_8bit = False
    try:
        four = engine.sample(request).sequences[0]
        base.decode_4bit = False
        exact = engine.sample(request).sequences[0]
    finally:
        weights.head_8bit, base.decode_4bit = True, True
    assert four.tokens == exact.tokens
    assert four.logprobs == exact.logprobs and four.top_logprobs == exact.top_logprobs
