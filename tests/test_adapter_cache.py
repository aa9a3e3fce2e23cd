"""The LRU of frozen sampling adapters: bounded by count and by MiB, transparent reload after
eviction, every adapter of one batch kept until it ends, live runs never in it."""

from __future__ import annotations

import pytest

from frontier_signal.backend.adapter_cache import MIB, adapter_bytes
from frontier_signal.engine.types import SampleRequest, SamplingParams

GREEDY = SamplingParams(max_tokens=6, temperature=0)


@pytest.fixture
def checkpoints(engine, make_run, datums, tmp_path):
    """Three sampler checkpoints of differently trained runs, and a greedy sample of each."""
    folders, runs = [], []
    for seed in range(3):
        run = make_run(seed=seed + 10)
        engine.forward_backward(run, datums)
        engine.optim_step(run, learning_rate=5e-2)
        folders.append(str(tmp_path / f"ckpt{seed}"))
        engine.save_checkpoint(run, folders[-1], "sampler")
        runs.append(run)
    yield runs, folders
    engine.configure_caches(1024, 64, 256)


def _sample(engine, run, folder, prompt):
    return engine.sample(SampleRequest(run, prompt, GREEDY, checkpoint=folder)).sequences[0]


def _key(engine, folder) -> str:
    return next(k for k in engine.adapters._entries if folder in k)


def test_count_budget_evicts_least_recent_and_reloads_the_same(engine, checkpoints, tokenizer):
    runs, folders = checkpoints
    prompt = tokenizer("Seven blue whales", add_special_tokens=False)["input_ids"]
    engine.configure_caches(1024, 2)
    first = [
        _sample(engine, run, folder, prompt) for run, folder in zip(runs, folders, strict=True)
    ]
    assert len({tuple(s.tokens) for s in first}) > 1  # the adapters do differ
    assert len(engine.adapters) == 2
    assert not any(folders[0] in key for key in engine.adapters._entries)  # the oldest left
    loads = engine.adapters.stats.loads
    again = _sample(engine, runs[0], folders[0], prompt)
    assert engine.adapters.stats.loads == loads + 1  # read from disk again
    assert again.tokens == first[0].tokens
    assert again.logprobs == pytest.approx(first[0].logprobs, abs=1e-5)
    assert not any(folders[1] in key for key in engine.adapters._entries)
    assert set(runs) <= set(engine.list_runs())  # live runs are never evicted


def test_mib_budget_and_a_batch_larger_than_the_budget(engine, checkpoints, tokenizer):
    runs, folders = checkpoints
    prompt = tokenizer("The capital of Zorbia", add_special_tokens=False)["input_ids"]
    alone = [
        _sample(engine, run, folder, prompt) for run, folder in zip(runs, folders, strict=True)
    ]
    size = adapter_bytes(engine.adapters._entries[_key(engine, folders[0])][0])
    engine.configure_caches(1.5 * size / MIB, 64)
    assert len(engine.adapters) == 1 and engine.adapters.bytes <= 1.5 * size
    # One batch naming all three: each row gets its own adapter, then the set shrinks again.
    engine.configure_caches(1024, 1)
    batch = engine.sample_batch(
        [SampleRequest(r, prompt, GREEDY, checkpoint=f) for r, f in zip(runs, folders, strict=True)]
    )
    assert [b.sequences[0].tokens for b in batch] == [s.tokens for s in alone]
    assert len(engine.adapters) == 1
