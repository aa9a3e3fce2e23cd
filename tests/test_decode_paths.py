"""The decode step's speed paths (backend/decode_threads.py, decode_head.py, decode_lora.py):
the thread governor's choices, the 8-bit lm_head, and LoRA terms kept in fp32 under bf16."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.backend import decode_head
from frontier_signal.backend.decode_threads import PROBE_EVERY, PROBE_MAX, DecodeThreadGovernor
from frontier_signal.engine.types import Datum, SampleRequest, SamplingParams
from tests.conftest import TINY, make_config


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _steps(governor: DecodeThreadGovernor, key, cost: dict[int, float], count: int) -> list[int]:
    """Run `count` steps whose time is `cost[threads]`; the thread counts they ran with."""
    used = []
    for _ in range(count):
        threads = governor.choose(key)
        governor.record(key, threads, cost[threads])
        used.append(threads)
    return used


def test_the_governor_runs_the_faster_count_and_probes_the_other_rarely(two_threads):
    governor = DecodeThreadGovernor()
    key = ("4bit", 1)
    # Contention: 2 threads stall at barriers (10x slower than 1).
    used = _steps(governor, key, {2: 0.010, 1: 0.001}, 400)
    assert used[:2] == [2, 1]  # each count measured once
    probes = [i for i, n in enumerate(used[2:], 2) if n == 2]
    assert probes and len(probes) <= 400 // 100  # ~20 x the ratio between probes
    assert all(b - a >= 20 * 10 for a, b in zip(probes, probes[1:], strict=False))
    # The contention ends: the next probe finds 2 threads faster and the governor moves to it.
    used = _steps(governor, key, {2: 0.0005, 1: 0.001}, PROBE_MAX + 100)
    assert used[-100:].count(2) >= 95  # 1 thread is still probed, every ~40 steps
    # A count that measures close to the best is probed often (every PROBE_EVERY-ish steps).
    used = _steps(governor, key, {2: 0.0005, 1: 0.00051}, 10 * PROBE_EVERY)
    assert 5 <= used.count(1) <= 12


def test_the_governor_restores_the_thread_count_and_can_be_turned_off(two_threads):
    governor = DecodeThreadGovernor()
    seen = [governor.run(("exact", 1), torch.get_num_threads) for _ in range(2)]
    assert seen == [2, 1] and torch.get_num_threads() == 2
    assert set(governor.describe()["('exact', 1)"]) == {1, 2}
    governor.enabled = False
    assert {governor.run(("exact", 1), torch.get_num_threads) for _ in range(50)} == {2}
    torch.set_num_threads(1)
    assert DecodeThreadGovernor().options() == [1]


@pytest.mark.skipif(not decode_head.available(), reason="no fbgemm/x86 quantized engine")
def test_the_8bit_lm_head_stays_close_to_the_bf16_one():
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(4096, 256, generator=generator) * 0.05).bfloat16()
    x = torch.randn(3, 256, generator=generator).bfloat16()
    exact = x.float() @ weight.float().T
    got = decode_head.Int8Head(weight, None)(x)
    assert got.dtype == torch.float32 and got.shape == exact.shape
    # 8-bit weights (per-row scales) and 8-bit activations: ~1 % of the logits' spread.
    assert (got - exact).abs().max() < 0.02 * exact.abs().max()
    assert torch.equal(got.argmax(-1), exact.argmax(-1))


@pytest.fixture(scope="module")
def bf16_engine():
    from frontier_signal.engine.engine import Engine

    return Engine(device="cpu", dtype="bfloat16")


def test_a_bf16_lora_run_decodes_as_the_hf_forward_does(bf16_engine):
    """LoRA terms in fp32 (rounded once into the bf16 output) vs the HF forward's bf16 terms:
    the same greedy tokens and log-probs within bf16 noise."""
    engine = bf16_engine
    run = engine.create_run(make_config(rank=8, alpha=16, learning_rate=0.05)).run_id
    tokenizer = engine.tokenizer(TINY)
    text = tokenizer("The capital of Zorbia is Quux.", add_special_tokens=False)["input_ids"]
    for _ in range(3):
        engine.forward_backward(run, [Datum(text[:-1], text[1:])])
        engine.optim_step(run)
    base = engine.load_model(TINY)
    prompt = text[:4]
    request = SampleRequest(run, prompt, SamplingParams(8, temperature=0))
    fast = engine.sample(request).sequences[0]
    assert base.decode_weights().lora.for_segments([(run, 0, 1)], torch.float32)
    base.fast_decode = False
    try:
        slow = engine.sample(request).sequences[0]
    finally:
        base.fast_decode = True
    assert fast.tokens[:4] == slow.tokens[:4]
    pairs = enumerate(zip(fast.tokens, slow.tokens, strict=True))
    shared = next((i for i, (a, b) in pairs if a != b), 8)
    assert fast.logprobs[:shared] == pytest.approx(slow.logprobs[:shared], abs=0.05)
    engine.delete_run(run)


def test_a_blocked_b_adds_what_its_block_diagonal_form_adds():
    from frontier_signal.backend.decode_lora import BlockedB

    generator = torch.Generator().manual_seed(3)
    outs, rank = [12, 4, 4], 2  # q|k|v-like: unequal outputs, one rank
    dense = torch.zeros(len(outs) * rank, sum(outs))
    start = 0
    for projection, out in enumerate(outs):
        block = torch.randn(rank, out, generator=generator)
        dense[projection * rank : (projection + 1) * rank, start : start + out] = block
        start += out
    blocked = BlockedB(dense, outs, rank)
    assert blocked.blocks.shape == (5, rank, 4)  # 3 + 1 + 1 blocks of width 4: no zeros kept
    hidden = torch.randn(3, len(outs) * rank, generator=generator)
    y = torch.randn(3, sum(outs), generator=generator)
    expected = y + hidden @ dense
    assert torch.allclose(blocked.add(y.clone(), hidden), expected, atol=1e-6)
    assert torch.equal(blocked.dense(), dense)
    bf16 = y.bfloat16()  # an fp32 term into a bf16 output: summed in fp32, rounded once
    assert torch.equal(
        blocked.add(bf16.clone(), hidden), (y.bfloat16().float() + hidden @ dense).bfloat16()
    )


@pytest.mark.parametrize("counts", [[1, 1, 1], [2, 1, 3]])
@pytest.mark.parametrize("blocked", [True, False])
def test_stacked_terms_add_what_each_run_adds(counts, blocked):
    """Several runs' terms batched over runs (`StackedTerm`) vs each run's own: rows of equal
    and unequal counts, q|k|v-like blocked B and a plain one."""
    from frontier_signal.backend.decode_lora import BlockedB, StackedTerm, add_lora

    generator = torch.Generator().manual_seed(4)
    outs, rank, width = ([12, 4, 4], 2, 6) if blocked else ([8], 3, 6)
    terms, start = [], 0
    for count in counts:
        A = torch.randn(len(outs) * rank, width, generator=generator)
        dense = torch.zeros(len(outs) * rank, sum(outs))
        column = 0
        for projection, out in enumerate(outs):
            rows = slice(projection * rank, (projection + 1) * rank)
            dense[rows, column : column + out] = torch.randn(rank, out, generator=generator)
            column += out
        B_t = BlockedB(dense, outs, rank) if blocked else dense
        terms.append((A, B_t, start, start + count))
        start += count
    x = torch.randn(start, width, generator=generator)
    y = torch.randn(start, sum(outs), generator=generator)
    assert StackedTerm.fits(terms)
    stacked = add_lora(y.clone(), x, StackedTerm(terms, start))
    one_by_one = add_lora(y.clone(), x, terms)
    torch.testing.assert_close(stacked, one_by_one, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(stacked, y)
