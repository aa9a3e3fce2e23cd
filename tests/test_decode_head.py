"""The 8-bit lm_head whose top logits are made exact (backend/decode_head.py, csrc/int8_head.cpp):
its greedy token is the bf16 head's, with the bf16 head's very logit, in a batch as alone."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.backend import decode_head
from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import TINY


@pytest.fixture
def bf16_ops(native_ops):
    if not native_ops.has_bf16_kernel():
        pytest.skip("the checked head is built only where the CPU has AVX512-BF16")
    return native_ops


def near_ties(vocab: int, dim: int, seed: int = 0) -> torch.Tensor:
    """bf16 rows in pairs a tiny step apart (far below an 8-bit code's step), so the codes
    alone often rank a pair the wrong way round."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(vocab // 2, dim, generator=generator) * 0.05
    nudge = torch.randn(vocab // 2, dim, generator=generator) * 2e-4
    return torch.stack([rows, rows + nudge], 1).view(vocab, dim).bfloat16()


def activations(count: int, dim: int, seed: int) -> torch.Tensor:
    """Rows like a final norm's output: mostly O(1), a few large features."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, dim, generator=generator)
    x[:, :3] *= 20
    return x.bfloat16()


def test_the_checked_heads_greedy_token_and_logit_are_the_bf16_heads(bf16_ops):
    vocab, dim = 4090, 256  # not a multiple of 16: the masked tail
    weight = near_ties(vocab, dim)
    bias = (torch.randn(vocab, generator=torch.Generator().manual_seed(1)) * 0.1).bfloat16()
    head = decode_head.CheckedHead(bf16_ops, weight, bias)
    # What the codes alone give (the step before the re-check), to show they go wrong here.
    scales = weight.float().abs().amax(1) / 63
    rounded = torch.round(weight.float() / scales[:, None]).clamp(-63, 63) * scales[:, None]
    wrong = 0
    for count in (1, 3, 8, 11):
        x = activations(count, dim, seed=count)
        got = head(x)
        exact = bf16_ops.linear(x, weight, bias).float()  # the exact decode's lm_head
        assert got.dtype == torch.float32 and got.shape == (count, vocab)
        assert torch.equal(got.argmax(-1), exact.argmax(-1))
        assert torch.equal(got.max(-1).values, exact.max(-1).values)
        assert (got - exact).abs().max() < 0.05 * exact.abs().max()  # the 7-bit tail
        alone = torch.cat([head(x[i : i + 1]) for i in range(count)])
        assert torch.equal(alone, got)
        codes_alone = x.float() @ rounded.T + bias.float()
        wrong += int((codes_alone.argmax(-1) != exact.argmax(-1)).sum())
    assert wrong > 0, "the near ties should fool the codes alone, or this test proves nothing"


def test_the_checked_head_is_built_only_for_what_its_kernel_takes(bf16_ops):
    weight = torch.randn(128, 64).bfloat16()
    assert isinstance(decode_head.build(weight, None), decode_head.CheckedHead)
    for other in (weight[:, :48].contiguous(), weight.float()):  # K not a multiple of 64, fp32
        assert not isinstance(decode_head.build(other, None), decode_head.CheckedHead)


def test_4bit_decode_with_the_8bit_head_picks_the_exact_decodes_tokens(bf16_ops):
    """The default quantized decode (4-bit layers, 8-bit head) against the exact bf16 one:
    the same greedy tokens, and each chosen token's logit the same (its log-prob differs
    only through the tail's share of the normaliser)."""
    from frontier_signal.engine.engine import Engine
    from tests.test_decode_4bit import install_q4_1

    engine = Engine(device="cpu", dtype="bfloat16")
    base = engine.load_model(TINY)
    head = base.lm_head.base.weight
    with torch.no_grad():  # near ties at the top, which an 8-bit head alone gets wrong
        head.copy_(near_ties(*head.shape, seed=2) * 8)
    install_q4_1(base)
    base.decode_4bit, base.decode_4bit_ready = True, True
    assert isinstance(base.decode_weights().quantized_head(), decode_head.CheckedHead)
    tokenizer = engine.tokenizer(TINY)
    params = SamplingParams(max_tokens=24, temperature=0)
    for text in ("The capital of Zorbia is", "Once upon a time", "def main():"):
        prompt = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        request = SampleRequest(TINY, prompt, params)
        base.decode_4bit = True
        four = engine.sample(request).sequences[0]
        base.decode_4bit = False
        exact = engine.sample(request).sequences[0]
        assert four.tokens == exact.tokens, text
        torch.testing.assert_close(four.logprobs, exact.logprobs, rtol=0, atol=2e-2)
