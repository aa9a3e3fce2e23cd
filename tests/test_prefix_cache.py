"""The prefix KV cache and shared prefill: same outputs with the cache on and off, hits on a
repeated prefix, no reuse across adapters, invalidation when a run trains, n samples prefilled
once."""

from __future__ import annotations

import random

import pytest

from frontier_signal.backend.prefix_cache import BLOCK
from frontier_signal.engine.types import SampleRequest, SamplingParams

GREEDY = SamplingParams(max_tokens=6, temperature=0)


@pytest.fixture
def prefix(engine):
    """The tiny model's prefix cache, emptied, with the default budget restored after."""
    from tests.conftest import TINY

    cache = engine.prefix_cache(TINY)
    cache.clear()
    yield cache
    engine.configure_caches(1024, 64, 256)
    cache.clear()


def _tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 40000) for _ in range(n)]


def _trained(engine, make_run, datums, seed: int) -> str:
    run = make_run(seed=seed)
    engine.forward_backward(run, datums)
    engine.optim_step(run, learning_rate=5e-2)
    return run


def _sample(engine, model, prompt, n=1, prompt_logprobs=False, params=GREEDY):
    return engine.sample(SampleRequest(model, prompt, params, n, prompt_logprobs))


def _same(a, b, tol=1e-4):
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
    for x, y in zip(a.sequences, b.sequences, strict=True):
        assert x.logprobs == pytest.approx(y.logprobs, abs=tol)
    if a.prompt_logprobs is not None:
        assert a.prompt_logprobs[0] is None and b.prompt_logprobs[0] is None
        assert a.prompt_logprobs[1:] == pytest.approx(b.prompt_logprobs[1:], abs=tol)


def test_cache_on_and_off_give_the_same_tokens_and_logprobs(engine, make_run, datums, prefix):
    run = _trained(engine, make_run, datums, seed=1)
    shared = _tokens(0, 3 * BLOCK + 5)
    prompts = [shared + _tokens(seed, 7) for seed in (1, 2)]
    engine.configure_caches(1024, 64, 0)
    off = [_sample(engine, run, p, prompt_logprobs=True) for p in prompts]
    engine.configure_caches(1024, 64, 256)
    cold = _sample(engine, run, prompts[0], prompt_logprobs=True)
    hits = prefix.stats.hit_tokens
    warm = [_sample(engine, run, p, prompt_logprobs=True) for p in prompts]
    assert prefix.stats.hit_tokens - hits >= 2 * (3 * BLOCK - 1)  # the shared blocks, twice
    for result, reference in zip([cold, *warm], [off[0], *off], strict=True):
        _same(result, reference)
    # Without prompt log-probs a hit takes whole blocks; mixed rows in one batch too.
    hits = prefix.stats.hit_tokens
    plain = engine.sample_batch(
        [SampleRequest(run, p, GREEDY) for p in prompts] + [SampleRequest(run, shared, GREEDY)]
    )
    assert prefix.stats.hit_tokens - hits >= 3 * 3 * BLOCK - BLOCK
    for result, reference in zip(plain, off, strict=False):
        assert [s.tokens for s in result.sequences] == [s.tokens for s in reference.sequences]


def test_no_reuse_across_adapters_and_invalidated_by_training(engine, make_run, datums, prefix):
    first = _trained(engine, make_run, datums, seed=2)
    second = _trained(engine, make_run, datums, seed=3)
    prompt = _tokens(5, 4 * BLOCK + 3)
    _sample(engine, first, prompt)
    hits = prefix.stats.hit_tokens
    engine.configure_caches(1024, 64, 0)
    reference = _sample(engine, second, prompt)
    engine.configure_caches(1024, 64, 256)
    assert _sample(engine, second, prompt).sequences[0].tokens == reference.sequences[0].tokens
    assert prefix.stats.hit_tokens == hits  # another adapter: nothing reused
    base = _sample(engine, "frontier-signal/tiny-llama", prompt)
    assert prefix.stats.hit_tokens == hits  # nor by the bare base model
    assert base.sequences[0].tokens  # (sampled, from its own blocks)

    # The run trains: its earlier blocks no longer match, and the output is the fresh one.
    _sample(engine, first, prompt, prompt_logprobs=True)
    _sample(engine, first, prompt, prompt_logprobs=True)
    assert prefix.stats.hit_tokens > hits  # it does hit while the weights stay
    hits = prefix.stats.hit_tokens
    for _ in range(2):
        engine.forward_backward(first, datums)
        engine.optim_step(first, learning_rate=5e-2)
    after = _sample(engine, first, prompt, prompt_logprobs=True)
    assert prefix.stats.hit_tokens == hits
    engine.configure_caches(1024, 64, 0)
    _same(after, _sample(engine, first, prompt, prompt_logprobs=True))


def test_n_samples_of_one_prompt_are_prefilled_once(engine, make_run, datums, prefix):
    run = _trained(engine, make_run, datums, seed=4)
    prompt = _tokens(9, 2 * BLOCK + 1)
    one = _sample(engine, run, prompt, prompt_logprobs=True)
    prefix.clear()
    lookups = prefix.stats.lookups
    many = _sample(engine, run, prompt, n=5, prompt_logprobs=True)
    assert prefix.stats.lookups - lookups == 1  # one distinct prompt in the prefill
    assert {tuple(s.tokens) for s in many.sequences} == {tuple(one.sequences[0].tokens)}
    _same(one, type(one)(many.sequences[:1], many.prompt_logprobs))
    sampled = _sample(engine, run, prompt, n=4, params=SamplingParams(6, 1.0, seed=3))
    engine.configure_caches(1024, 64, 0)
    again = _sample(engine, run, prompt, n=4, params=SamplingParams(6, 1.0, seed=3))
    assert [s.tokens for s in sampled.sequences] == [s.tokens for s in again.sequences]


def test_the_budget_bounds_the_cache(engine, prefix):
    from tests.conftest import TINY

    _sample(engine, TINY, _tokens(11, 8 * BLOCK + 1))
    block = next(iter(prefix._blocks.values())).nbytes
    engine.configure_caches(1024, 64, 3 * block / (1 << 20))
    assert len(prefix) == 3 and prefix.stats.evicted_blocks >= 5
    _sample(engine, TINY, _tokens(12, 8 * BLOCK + 1))
    assert len(prefix) == 3
