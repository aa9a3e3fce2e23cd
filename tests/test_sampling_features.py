"""The fast decode path and the OpenAI-style sampling settings: penalties and top log-probs."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import TINY


def _prompt(tokenizer, text="The capital of Zorbia is"):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _logits_after(engine, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """The tiny model's next-token logits after each generated prefix, [len(tokens), V]."""
    model = engine.load_model(TINY).model
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]


@pytest.mark.parametrize("with_base_row", [True, False])
def test_the_fast_decode_step_gives_what_the_hf_forward_gives(
    engine, make_run, datums, tokenizer, with_base_row
):
    # Two runs (different ranks and targets) share each group's joint LoRA term; a bare-base
    # row gets none of it.
    targets = ("q_proj", "v_proj", "up_proj", "lm_head")
    trained, other = make_run(seed=5, target_modules=targets), make_run(seed=8, rank=8)
    for run in (trained, other):
        for _ in range(2):
            engine.forward_backward(run, datums)
            engine.optim_step(run, learning_rate=0.05)
    requests = [
        SampleRequest(trained, _prompt(tokenizer), SamplingParams(9, temperature=0)),
        SampleRequest(other, _prompt(tokenizer, "Seven blue whales"), SamplingParams(9, seed=4)),
        SampleRequest(trained, _prompt(tokenizer, "Hi"), SamplingParams(9, seed=2), num_samples=2),
    ]
    if with_base_row:
        requests.append(SampleRequest(TINY, _prompt(tokenizer, "Ok"), SamplingParams(9, seed=1)))
    base = engine.load_model(TINY)
    assert base.decode_weights() is not None  # the tiny model is a Llama: the fast path runs
    fast = engine.sample_batch(requests)
    base.fast_decode = False
    try:
        slow = engine.sample_batch(requests)
    finally:
        base.fast_decode = True
    for ours, theirs in zip(fast, slow, strict=True):
        for a, b in zip(ours.sequences, theirs.sequences, strict=True):
            assert a.tokens == b.tokens
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_an_optimizer_step_between_samples_is_seen_by_the_fast_path(
    engine, make_run, datums, tokenizer
):
    run = make_run(seed=6)
    greedy = SampleRequest(run, _prompt(tokenizer), SamplingParams(6, temperature=0))
    before = engine.sample(greedy).sequences[0].logprobs
    engine.forward_backward(run, datums)
    engine.optim_step(run, learning_rate=0.05)
    after = engine.sample(greedy).sequences[0]
    forward = engine.forward(run, [_datum(greedy.prompt_tokens, after.tokens)]).logprobs[0]
    assert after.logprobs == pytest.approx(forward[-len(after.tokens) :], abs=1e-4)
    assert after.logprobs != pytest.approx(before, abs=1e-4)


def _datum(prompt: list[int], tokens: list[int]):
    from frontier_signal.engine.types import Datum

    sequence = prompt + tokens
    return Datum(sequence[:-1], sequence[1:])


def test_greedy_with_a_repetition_penalty_equals_transformers_generate(engine, tokenizer):
    prompt = _prompt(tokenizer)
    params = SamplingParams(max_tokens=10, temperature=0, repetition_penalty=1.5)
    ours = engine.sample(SampleRequest(TINY, prompt, params)).sequences[0].tokens
    model = engine.load_model(TINY).model
    with torch.no_grad():
        theirs = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=10,
            do_sample=False,
            repetition_penalty=1.5,
            eos_token_id=None,
            pad_token_id=2,
        )
    assert ours == theirs[0, len(prompt) :].tolist()
    plain = engine.sample(SampleRequest(TINY, prompt, SamplingParams(10, temperature=0)))
    assert plain.sequences[0].tokens != ours  # the penalty changed something


def test_presence_and_frequency_penalties_follow_openai_semantics(engine, tokenizer):
    prompt = _prompt(tokenizer)
    params = SamplingParams(
        max_tokens=8, temperature=0, presence_penalty=0.7, frequency_penalty=1.3
    )
    seq = engine.sample(SampleRequest(TINY, prompt, params)).sequences[0]
    logits = _logits_after(engine, prompt, seq.tokens)
    counts = torch.zeros(logits.shape[-1])
    for step, token in enumerate(seq.tokens):
        adjusted = logits[step] - counts * 1.3 - (counts > 0).float() * 0.7
        expected = adjusted.log_softmax(-1)
        assert token == int(expected.argmax())
        assert seq.logprobs[step] == pytest.approx(float(expected[token]), abs=1e-4)
        counts[token] += 1


def test_top_logprobs_list_the_most_likely_alternatives(engine, tokenizer):
    prompt = _prompt(tokenizer)
    greedy = engine.sample(SampleRequest(TINY, prompt, SamplingParams(5, temperature=0)))
    assert greedy.sequences[0].top_logprobs == []  # not asked: empty
    asked = engine.sample(
        SampleRequest(TINY, prompt, SamplingParams(5, temperature=0, top_logprobs=4))
    ).sequences[0]
    sampled = engine.sample(
        SampleRequest(TINY, prompt, SamplingParams(5, seed=3, top_logprobs=20))
    ).sequences[0]
    assert len(asked.top_logprobs) == len(asked.tokens) == 5
    for token, logprob, top in zip(asked.tokens, asked.logprobs, asked.top_logprobs, strict=True):
        assert len(top) == 4 and top[0] == (token, pytest.approx(logprob))
        assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    for logprob, top in zip(sampled.logprobs, sampled.top_logprobs, strict=True):
        assert len(top) == 20 and logprob <= top[0][1] + 1e-6


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (SamplingParams(presence_penalty=2.5), "presence_penalty must be a number in"),
        (SamplingParams(frequency_penalty=float("nan")), "frequency_penalty"),
        (SamplingParams(repetition_penalty=0), "repetition_penalty must be a number > 0"),
        (SamplingParams(top_logprobs=21), r"top_logprobs must be an integer in \[0, 20\]"),
        (SamplingParams(top_logprobs=-1), "top_logprobs"),
    ],
)
def test_bad_penalties_and_top_logprobs_are_rejected(engine, params, message):
    with pytest.raises(InvalidInputError, match=message):
        engine.sample(SampleRequest(TINY, [1, 2, 3], params))


def test_int8_decode_weights_stay_close_to_the_exact_model(engine, make_run, tokenizer):
    run = make_run(seed=7)
    base = engine.load_model(TINY)
    prompt = _prompt(tokenizer)
    request = SampleRequest(run, prompt, SamplingParams(8, temperature=0, top_logprobs=2))
    base.decode_int8 = True
    try:
        quantized = engine.sample(request).sequences[0]
    finally:
        base.decode_int8 = False
    assert base.decode_weights().int8_layers is not None  # the int8 path really ran
    exact = engine.forward(run, [_datum(prompt, quantized.tokens)]).logprobs[0]
    assert quantized.logprobs == pytest.approx(exact[-len(quantized.tokens) :], abs=0.05)
