"""Structured output on the OpenAI face, driven by the official `openai` SDK: JSON schemas,
JSON mode and tool arguments enforced by constrained decoding, so even the untrained tiny model
answers with schema-valid JSON; `min_p` and `logit_bias`."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.conftest import TINY
from tests.integration.tool_chat import QUESTION

openai = pytest.importorskip("openai")

FORECAST = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "days", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "forecast", "parameters": FORECAST}},
    {
        "type": "function",
        "function": {
            "name": "clock",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"enum": ["UTC", "CET"]}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    },
]
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "forecast", "schema": FORECAST, "strict": True},
}
ASK = [{"role": "user", "content": "Give the forecast for Paris as JSON."}]


def test_json_schema_answers_follow_the_schema_streamed_or_not(oai):
    common = {"model": TINY, "messages": ASK, "max_tokens": 60, "seed": 3}
    answer = oai.chat.completions.create(**common, response_format=SCHEMA_FORMAT, n=3)
    for choice in answer.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), FORECAST)
    stream = oai.chat.completions.create(**common, response_format=SCHEMA_FORMAT, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == answer.choices[0].message.content


def test_json_object_mode_returns_one_object(oai):
    answer = oai.chat.completions.create(
        model=TINY, messages=ASK, max_tokens=60, seed=1, response_format={"type": "json_object"}
    )
    choice = answer.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:  # an untrained model may ramble inside a string until max_tokens
        assert choice.finish_reason == "length" and choice.message.content.startswith("{")


def test_running_out_of_max_tokens_is_a_length_finish(oai):
    answer = oai.chat.completions.create(
        model=TINY, messages=ASK, max_tokens=3, seed=3, response_format=SCHEMA_FORMAT
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content.startswith("{")
    assert answer.usage.completion_tokens == 3


def test_required_and_named_tool_choices_give_schema_valid_arguments(oai):
    common = {"model": TINY, "messages": [QUESTION], "max_tokens": 80, "tools": TOOLS}
    required = oai.chat.completions.create(**common, tool_choice="required", n=3, seed=5)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for choice in required.choices:
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    named = {"type": "function", "function": {"name": "clock"}}
    answer = oai.chat.completions.create(**common, tool_choice=named, seed=6)
    [call] = answer.choices[0].message.tool_calls
    assert call.function.name == "clock"
    assert json.loads(call.function.arguments)["zone"] in ("UTC", "CET")
    stream = oai.chat.completions.create(**common, tool_choice=named, seed=6, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    [streamed] = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert streamed.function.arguments == call.function.arguments


def test_a_schema_the_grammar_engine_cannot_compile_is_a_400(oai):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}
    with pytest.raises(openai.BadRequestError, match="schema"):
        oai.chat.completions.create(model=TINY, messages=ASK, max_tokens=4, response_format=bad)


def test_logit_bias_forces_and_bans_tokens_on_chat_and_completions(oai, tiny_tokenizer):
    [token] = tiny_tokenizer(" banana", add_special_tokens=False)["input_ids"]
    forced = oai.completions.create(
        model=TINY, prompt="I like", max_tokens=3, temperature=0, logit_bias={str(token): 100}
    )
    assert forced.choices[0].text == " banana" * 3
    chat = oai.chat.completions.create(
        model=TINY, messages=ASK, max_tokens=3, seed=2, logit_bias={str(token): 100}
    )
    assert chat.choices[0].message.content == " banana" * 3
    greedy = oai.completions.create(model=TINY, prompt="I like", max_tokens=4, temperature=0)
    first = tiny_tokenizer(greedy.choices[0].text, add_special_tokens=False)["input_ids"][0]
    banned = oai.completions.create(
        model=TINY, prompt="I like", max_tokens=4, temperature=0, logit_bias={str(first): -100}
    )
    assert banned.choices[0].text != greedy.choices[0].text


def test_min_p_of_one_samples_only_the_most_likely_token(oai):
    greedy = oai.completions.create(model=TINY, prompt="Once upon", max_tokens=6, temperature=0)
    sampled = oai.completions.create(
        model=TINY,
        prompt="Once upon",
        max_tokens=6,
        temperature=1.5,
        seed=9,
        extra_body={"min_p": 1.0},
    )
    assert sampled.choices[0].text == greedy.choices[0].text
