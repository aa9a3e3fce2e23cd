"""The one stop policy (engine/validation.stop_token_ids, applied by the executor) and how
each face's wire spelling maps onto it."""

from __future__ import annotations

from frontier_signal.engine.types import SamplingParams
from frontier_signal.engine.validation import stop_token_ids, tokens_to_generate
from frontier_signal.server.schemas.openai import CompletionBody
from frontier_signal.server.schemas.tinker import WireSamplingParams, to_sampling_params
from frontier_signal.service.sampling import sample_requests

EOS = 2


def test_eos_joins_the_request_stop_tokens_unless_ignore_eos():
    assert stop_token_ids(SamplingParams(), EOS) == (EOS,)
    assert stop_token_ids(SamplingParams(stop_token_ids=(7,)), EOS) == (7, EOS)
    assert stop_token_ids(SamplingParams(stop_token_ids=(EOS,)), EOS) == (EOS,)
    assert stop_token_ids(SamplingParams(ignore_eos=True), EOS) == ()
    assert stop_token_ids(SamplingParams(), None) == ()


def test_tinker_stop_token_ids_are_exactly_those_and_strings_keep_eos():
    ids = to_sampling_params(WireSamplingParams(stop=[7, 9]))
    assert stop_token_ids(ids, EOS) == (7, 9)
    strings = to_sampling_params(WireSamplingParams(stop=["\n"]))
    assert stop_token_ids(strings, EOS) == (EOS,) and strings.stop_strings == ("\n",)


def test_openai_ignore_eos_reaches_the_policy():
    body = CompletionBody(model="m", prompt="x", ignore_eos=True)
    assert stop_token_ids(body.sampling_params(4, 0), EOS) == ()
    plain = CompletionBody(model="m", prompt="x")
    assert stop_token_ids(plain.sampling_params(4, 0), EOS) == (EOS,)


def test_the_builder_makes_one_request_per_prompt_and_the_context_caps_max_tokens():
    [text] = sample_requests("run", ["Hello"], SamplingParams(max_tokens=5))
    assert text.prompt_text == "Hello" and text.prompt_tokens == [] and text.params.max_tokens == 5
    [tokens] = sample_requests("base", [[1, 2]], SamplingParams(), num_samples=3)
    assert tokens.prompt_tokens == [1, 2] and tokens.num_samples == 3
    # What the executor does with `fit_context`: 0 means as many as fit, up to the default.
    assert tokens_to_generate(40, 10, 0, 512) == 30
    assert tokens_to_generate(40, 30, 0, 512) == 10
