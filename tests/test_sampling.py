"""Sampling: reproducible seeds, stops, greedy parity with transformers, batching invariance."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import TINY


def _prompt(tokenizer, text="The capital of Zorbia is"):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_sampling_with_a_seed_is_reproducible_and_seeds_differ(engine, make_run, tokenizer):
    run = make_run()
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=7)
    request = SampleRequest(run, _prompt(tokenizer), params, num_samples=3)
    first, again = engine.sample(request), engine.sample(request)
    assert [s.tokens for s in first.sequences] == [s.tokens for s in again.sequences]
    assert len({tuple(s.tokens) for s in first.sequences}) == 3  # n distinct samples
    other = engine.sample(SampleRequest(run, _prompt(tokenizer), SamplingParams(12, seed=8)))
    assert other.sequences[0].tokens != first.sequences[0].tokens
    seq = first.sequences[0]
    assert len(seq.tokens) == len(seq.logprobs) == 12 and seq.stop_reason == "length"


def test_greedy_decoding_equals_transformers_generate(engine, tokenizer):
    prompt = _prompt(tokenizer)
    ours = engine.sample(SampleRequest(TINY, prompt, SamplingParams(max_tokens=10, temperature=0)))
    model = engine.load_model(TINY).model
    with torch.no_grad():
        theirs = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=10,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=2,
        )
    assert ours.sequences[0].tokens == theirs[0, len(prompt) :].tolist()


def test_stop_strings_cut_the_text_and_stop_token_ids_end_the_sequence(engine, tokenizer):
    prompt = _prompt(tokenizer)
    free = engine.sample(SampleRequest(TINY, prompt, SamplingParams(max_tokens=8, temperature=0)))
    tokens, text = free.sequences[0].tokens, free.sequences[0].text
    stop_token = tokens[3]
    by_token = engine.sample(
        SampleRequest(
            TINY, prompt, SamplingParams(max_tokens=8, temperature=0, stop_token_ids=(stop_token,))
        )
    )
    seq = by_token.sequences[0]
    assert seq.tokens == tokens[: tokens.index(stop_token) + 1] and seq.stop_reason == "stop"
    assert seq.text == tokenizer.decode(seq.tokens[:-1])
    stop_string = text[len(text) // 2 : len(text) // 2 + 3]
    by_string = engine.sample(
        SampleRequest(
            TINY, prompt, SamplingParams(max_tokens=8, temperature=0, stop_strings=(stop_string,))
        )
    )
    assert by_string.sequences[0].stop_reason == "stop"
    assert by_string.sequences[0].text == text[: text.index(stop_string)]


def test_prompt_logprobs_have_a_leading_none_and_match_forward(engine, make_run, tokenizer):
    from frontier_signal.engine.types import Datum

    run = make_run()
    prompt = _prompt(tokenizer)
    result = engine.sample(
        SampleRequest(run, prompt, SamplingParams(max_tokens=1), prompt_logprobs=True)
    )
    assert result.prompt_logprobs[0] is None and len(result.prompt_logprobs) == len(prompt)
    forward = engine.forward(run, [Datum(prompt[:-1], prompt[1:])]).logprobs[0]
    assert result.prompt_logprobs[1:] == pytest.approx(forward, abs=1e-4)


def test_a_batch_of_prompts_and_runs_gives_each_row_what_it_gets_alone(
    engine, make_run, datums, tokenizer
):
    trained = make_run(seed=3)
    for _ in range(3):
        engine.forward_backward(trained, datums)
        engine.optim_step(trained, learning_rate=0.05)
    greedy = SamplingParams(max_tokens=6, temperature=0)
    requests = [
        SampleRequest(trained, _prompt(tokenizer), greedy),
        SampleRequest(TINY, _prompt(tokenizer, "Seven blue whales"), greedy),
        SampleRequest(trained, _prompt(tokenizer, "Frontier"), SamplingParams(6, seed=3)),
    ]
    together = engine.sample_batch(requests)
    for request, result in zip(requests, together, strict=True):
        alone = engine.sample(request)
        assert result.sequences[0].tokens == alone.sequences[0].tokens
        assert result.sequences[0].logprobs == pytest.approx(alone.sequences[0].logprobs, abs=1e-4)
    # the trained run really is different from the bare base model
    base = engine.sample(SampleRequest(TINY, _prompt(tokenizer), greedy))
    assert base.sequences[0].logprobs != pytest.approx(together[0].sequences[0].logprobs, abs=1e-4)


def test_top_k_one_is_greedy(engine, tokenizer):
    prompt = _prompt(tokenizer)
    greedy = engine.sample(SampleRequest(TINY, prompt, SamplingParams(8, temperature=0)))
    top1 = engine.sample(
        SampleRequest(TINY, prompt, SamplingParams(8, temperature=1.5, top_k=1, seed=1))
    )
    assert top1.sequences[0].tokens == greedy.sequences[0].tokens


def test_a_text_prompt_is_tokenized_with_the_models_tokenizer(engine, tokenizer):
    greedy = SamplingParams(6, temperature=0)
    by_text = engine.sample(
        SampleRequest(TINY, prompt_text="The capital of Zorbia is", params=greedy)
    )
    by_tokens = engine.sample(SampleRequest(TINY, _prompt(tokenizer), greedy))
    assert by_text.sequences[0].tokens == by_tokens.sequences[0].tokens


def test_the_token_callback_sees_every_token_of_every_request_in_order(engine, make_run, tokenizer):
    run = make_run()
    requests = [
        SampleRequest(run, _prompt(tokenizer), SamplingParams(max_tokens=5, seed=1), num_samples=2),
        SampleRequest(TINY, _prompt(tokenizer, "Hello"), SamplingParams(max_tokens=3, seed=2)),
    ]
    seen: dict[tuple[int, int], list[tuple[int, float]]] = {}
    results = engine.sample_batch(
        requests, on_token=lambda r, s, tok, lp: seen.setdefault((r, s), []).append((tok, lp))
    )
    assert sorted(seen) == [(0, 0), (0, 1), (1, 0)]
    for (r, s), events in seen.items():
        sequence = results[r].sequences[s]
        assert [tok for tok, _ in events] == sequence.tokens
        assert [lp for _, lp in events] == sequence.logprobs


def test_embeddings_are_unit_vectors_that_follow_the_run_weights(engine, make_run):
    run = make_run()
    texts = ["The capital of Zorbia is Quellmar.", "Hi"]
    vectors = engine.embed(run, texts)
    assert len(vectors) == 2 and len(vectors[0]) == engine.load_model(TINY).model.config.hidden_size
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    alone = engine.embed(run, texts[1:])  # padding of a longer neighbour changes nothing
    assert max(abs(a - b) for a, b in zip(alone[0], vectors[1], strict=True)) < 1e-5
    with pytest.raises(ValueError, match="non-empty"):
        engine.embed(run, [])


def test_several_runs_decoding_together_each_get_what_they_get_alone(
    engine, make_run, datums, tokenizer
):
    """Three trained runs of one rank (their LoRA terms batched over runs, `StackedTerm`), one
    with two samples, beside the bare base model."""
    runs = [make_run(seed=seed) for seed in (4, 5, 6)]
    for index, run in enumerate(runs):
        for _ in range(2):
            engine.forward_backward(run, datums[index:])
            engine.optim_step(run, learning_rate=0.05)
    greedy = SamplingParams(max_tokens=6, temperature=0)
    requests = [
        SampleRequest(runs[0], _prompt(tokenizer), greedy),
        SampleRequest(TINY, _prompt(tokenizer, "Seven blue whales"), greedy),
        SampleRequest(runs[1], _prompt(tokenizer, "Frontier"), SamplingParams(6, seed=3), 2),
        SampleRequest(runs[2], _prompt(tokenizer, "Frontier"), greedy),
    ]
    together = engine.sample_batch(requests)
    for request, result in zip(requests, together, strict=True):
        alone = engine.sample(request)
        for got, expected in zip(result.sequences, alone.sequences, strict=True):
            assert got.tokens == expected.tokens
            assert got.logprobs == pytest.approx(expected.logprobs, abs=1e-4)
    assert together[2].sequences[0].tokens != together[3].sequences[0].tokens or (
        together[2].sequences[0].logprobs != pytest.approx(together[3].sequences[0].logprobs)
    )
