"""Constrained decoding (llguidance grammars), min_p and logit_bias in the engine, on the tiny
untrained model: whatever its logits, the output follows the grammar."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from frontier_signal.backend.token_choice import choose
from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.structured import json_schema_grammar, tool_call_grammar
from frontier_signal.engine.tools import parse_tool_calls
from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import TINY

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "rain": {"type": "boolean"},
    },
    "required": ["city", "days", "unit", "rain"],
    "additionalProperties": False,
}
WEATHER = {"name": "get_weather", "parameters": SCHEMA}
TIME = {
    "name": "get_time",
    "parameters": {
        "type": "object",
        "properties": {"zone": {"enum": ["UTC", "CET"]}},
        "required": ["zone"],
        "additionalProperties": False,
    },
}


def _prompt(tokenizer, text="Answer in JSON:"):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _sample(engine, tokenizer, grammar: str, n=3, max_tokens=80, **params):
    eos = tokenizer.eos_token_id
    settings = SamplingParams(max_tokens, seed=7, grammar=grammar, stop_token_ids=(eos,), **params)
    [result] = engine.sample_batch([SampleRequest(TINY, _prompt(tokenizer), settings, n)])
    return result.sequences


def test_a_json_schema_grammar_makes_the_untrained_model_return_valid_json(engine, tokenizer):
    for sequence in _sample(engine, tokenizer, json_schema_grammar(SCHEMA)):
        assert sequence.stop_reason == "stop"
        jsonschema.validate(json.loads(sequence.text), SCHEMA)


def test_rows_with_and_without_grammars_share_a_batch(engine, tokenizer):
    grammar = json_schema_grammar(SCHEMA)
    free = SamplingParams(20, seed=3)
    constrained = SamplingParams(80, seed=3, grammar=grammar)
    requests = [
        SampleRequest(TINY, _prompt(tokenizer), free),
        SampleRequest(TINY, _prompt(tokenizer, "Other"), constrained, 2),
        SampleRequest(TINY, _prompt(tokenizer, "x"), free),
    ]
    alone = engine.sample_batch([requests[0]])[0].sequences[0]
    results = engine.sample_batch(requests)
    assert results[0].sequences[0].tokens == alone.tokens  # the grammar row changes nothing
    for sequence in results[1].sequences:
        jsonschema.validate(json.loads(sequence.text), SCHEMA)
    with pytest.raises(json.JSONDecodeError):
        json.loads(results[2].sequences[0].text)


def test_greedy_decoding_follows_the_grammar_too(engine, tokenizer):
    [sequence] = _sample(engine, tokenizer, json_schema_grammar(SCHEMA), n=1, temperature=0)
    jsonschema.validate(json.loads(sequence.text), SCHEMA)


def test_running_out_of_tokens_ends_with_length_and_a_prefix_of_valid_json(engine, tokenizer):
    [sequence] = _sample(engine, tokenizer, json_schema_grammar(SCHEMA), n=1, max_tokens=4)
    assert sequence.stop_reason == "length"
    assert len(sequence.tokens) == 4 and sequence.text.startswith("{")


def test_a_required_tool_call_grammar_gives_a_call_that_follows_the_schema(engine, tokenizer):
    grammar = tool_call_grammar([WEATHER, TIME], "required")
    for sequence in _sample(engine, tokenizer, grammar):
        content, calls = parse_tool_calls(
            "<tool_call>" + sequence.text, {"get_weather", "get_time"}
        )
        [call] = calls
        schema = WEATHER if call.name == "get_weather" else TIME
        jsonschema.validate(json.loads(call.arguments), schema["parameters"])


def test_a_named_tool_grammar_gives_that_functions_arguments(engine, tokenizer):
    grammar = tool_call_grammar([WEATHER, TIME], "named", "get_time")
    prefill = '<tool_call>{"name": "get_time", "arguments": '
    for sequence in _sample(engine, tokenizer, grammar):
        _, [call] = parse_tool_calls(prefill + sequence.text, {"get_weather", "get_time"})
        assert call.name == "get_time"
        jsonschema.validate(json.loads(call.arguments), TIME["parameters"])


def test_an_auto_tool_grammar_allows_free_text_and_checks_calls(engine, tokenizer):
    from llguidance import LLMatcher

    from frontier_signal.engine.structured import grammar_tokenizer

    grammar = tool_call_grammar([WEATHER, TIME], "auto")
    lltok = grammar_tokenizer(tokenizer)

    def accepts(text: str) -> bool:
        matcher = LLMatcher(lltok, grammar, log_level=0)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return matcher.consume_tokens(ids) and matcher.is_accepting()

    assert accepts("Just text, no call.")
    assert accepts(
        'Let me look. <tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}</tool_call>'
    )
    assert not accepts('<tool_call>{"name": "get_time", "arguments": {"zone": "PST"}}')
    assert not accepts('<tool_call>{"name": "nope", "arguments": {}}')


def test_a_schema_llguidance_cannot_compile_is_refused_before_decoding(engine, tokenizer):
    bad = json_schema_grammar({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})
    with pytest.raises(InvalidInputError, match="cannot be enforced"):
        _sample(engine, tokenizer, bad, n=1)
    with pytest.raises(InvalidInputError, match="JSON schema object"):
        json_schema_grammar(["not", "a", "schema"])


def test_min_p_keeps_only_tokens_near_the_most_likely():
    logits = torch.tensor([4.0, 3.9, 0.0, -1.0])
    generator = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=1.0, min_p=0.5)
    seen = {choose(logits, params, generator)[0] for _ in range(200)}
    assert seen == {0, 1}


def test_logit_bias_steers_and_bans_tokens():
    logits = torch.tensor([4.0, 3.9, 0.0, -1.0])
    greedy = SamplingParams(temperature=0, logit_bias=((3, 100.0),))
    assert choose(logits, greedy, torch.Generator())[0] == 3
    banned = SamplingParams(temperature=1.0, logit_bias=((0, -100.0), (1, -100.0)))
    generator = torch.Generator().manual_seed(0)
    assert {choose(logits, banned, generator)[0] for _ in range(100)} <= {2, 3}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (SamplingParams(min_p=1.5), "min_p"),
        (SamplingParams(logit_bias=((10**9, 1.0),)), "outside the vocabulary"),
        (SamplingParams(logit_bias=((5, 101.0),)), r"\[-100, 100\]"),
    ],
)
def test_bad_min_p_or_logit_bias_is_refused(engine, tokenizer, params, match):
    with pytest.raises(InvalidInputError, match=match):
        engine.sample_batch([SampleRequest(TINY, _prompt(tokenizer), params)])
