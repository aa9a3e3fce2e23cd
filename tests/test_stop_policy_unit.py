"""The one stop policy (service/sampling.py) and how each face's wire spelling maps onto it."""

from __future__ import annotations

from frontier_signal.engine.types import SamplingParams
from frontier_signal.server.schemas.openai import CompletionBody
from frontier_signal.server.schemas.tinker import WireSamplingParams, to_sampling_params
from frontier_signal.service.sampling import sample_requests, stop_token_ids

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


def test_the_builder_applies_the_policy_and_the_context_to_every_prompt():
    [text] = sample_requests("run", ["Hello"], SamplingParams(max_tokens=5), EOS)
    assert text.prompt_text == "Hello" and text.params.stop_token_ids == (EOS,)
    params = SamplingParams(max_tokens=0)
    short, long = sample_requests("base", [[1] * 10, [1] * 30], params, EOS, context=40)
    assert short.params.max_tokens == 30 and long.params.max_tokens == 10
    assert short.params.stop_token_ids == long.params.stop_token_ids == (EOS,)
