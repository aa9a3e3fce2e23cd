"""The tool format (engine/tools.py) and how the OpenAI face shapes text into answers."""

from __future__ import annotations

import json

import pytest

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.rendering import render_example
from frontier_signal.engine.tools import (
    check_tools,
    parse_tool_calls,
    render_call,
    template_messages,
)
from frontier_signal.service.chat import ChatShape

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    ],
}


def test_tools_go_into_the_system_message_and_calls_and_results_into_text():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        CALL,
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    plain = template_messages(messages, check_tools([WEATHER]))
    assert [m["role"] for m in plain] == ["system", "user", "assistant", "tool"]
    assert (
        plain[0]["content"].startswith("Be brief.\n\n") and '"get_weather"' in plain[0]["content"]
    )
    assert plain[1]["content"] == "Weather?"
    assert plain[2]["content"] == '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    assert plain[3]["content"] == "<tool_response>sunny</tool_response>"
    no_system = template_messages(messages[1:], check_tools([WEATHER]))
    assert no_system[0]["role"] == "system" and "<tools>" in no_system[0]["content"]


def test_calls_parse_back_with_json_string_arguments_and_fresh_ids():
    text = 'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
    text += "</tool_call>" + render_call("get_weather", '{"city": "Rome"}')
    content, calls = parse_tool_calls(text, {"get_weather"})
    assert content == "Let me check."
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert len({c.id for c in calls}) == 2
    assert calls[0].as_openai()["type"] == "function"


@pytest.mark.parametrize(
    "text",
    [
        "no call here",
        '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',  # bad JSON
        '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',  # unknown
        '<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>',  # not an object
        '<tool_call>{"name": "get_weather", "arguments": {}}',  # never closed
    ],
)
def test_anything_but_well_formed_calls_of_known_functions_stays_plain_text(text):
    assert parse_tool_calls(text, {"get_weather"}) == (text, [])


@pytest.mark.parametrize(
    ("tools", "needle"),
    [
        ([], "non-empty"),
        ([{"type": "function"}], "tools[0]"),
        ([{"type": "retrieval", "function": {"name": "x"}}], "tools[0]"),
        ([WEATHER, WEATHER], "unique"),
        ([{"function": {"name": "x", "parameters": "str"}}], "parameters"),
    ],
)
def test_bad_tool_lists_are_refused_saying_what_is_wrong(tools, needle):
    with pytest.raises(InvalidInputError, match=needle.replace("[", r"\[")):
        check_tools(tools)


def test_bad_messages_are_refused_naming_the_message():
    with pytest.raises(InvalidInputError, match=r"messages\[1\].*role"):
        template_messages([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}])
    with pytest.raises(InvalidInputError, match=r"messages\[0\].content\[0\].*image_url"):
        template_messages([{"role": "user", "content": [{"type": "image_url"}]}])
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        template_messages([CALL | {"tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}])


def test_training_renders_tool_conversations_exactly_as_serving_does(tokenizer):
    messages = [{"role": "user", "content": "Weather?"}, CALL]
    rendered = render_example(tokenizer, {"messages": messages, "tools": [WEATHER]}, 512)
    datum = rendered.datum
    trained = [t for t, w in zip(datum.target_tokens, datum.weights, strict=True) if w]
    assert tokenizer.decode(trained) == (
        '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call><|im_end|>'
    )
    served = tokenizer.apply_chat_template(
        template_messages(messages[:1], check_tools([WEATHER])),
        tokenize=False,
        add_generation_prompt=True,
    )
    full = tokenizer.decode(datum.input_tokens + datum.target_tokens[-1:])
    assert full.startswith(served)


def test_streamed_text_holds_back_what_a_stop_string_or_a_call_may_claim():
    tools = ChatShape(tool_names={"get_weather"})
    assert tools.visible("Sure <tool", ()) == "Sure "
    assert tools.visible('Sure <tool_call>{"name"', ()) == "Sure "
    assert ChatShape().visible("Hello wor", ("world",)) == "Hello "
    assert ChatShape().visible("Hello world and more", ("world",)) == "Hello "
    assert ChatShape().visible("Hello", ("xyz",)) == "Hello"


def test_json_mode_ends_the_answer_at_the_end_of_the_object():
    shape = ChatShape(prefill="{", json_mode=True)
    assert shape.answer('"a": 1} and then some', "length") == ('{"a": 1}', [], "stop")
    assert shape.answer('"a": [1, 2', "length") == ('{"a": [1, 2', [], "length")
    assert shape.visible('"a": 1}\n\nmore', ()) == '{"a": 1}'


def test_incremental_text_equals_decoding_everything_at_once(tokenizer):
    from frontier_signal.service.streaming import IncrementalText

    text = "Zürich 🦦 naïve — 東京 ok\n  spaced"
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    growing = IncrementalText(tokenizer)
    seen = []
    for token in tokens:
        growing.add(token)
        seen.append(growing.text)
        assert "\ufffd" not in growing.text
    assert growing.text == tokenizer.decode(tokens) == text
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:], strict=False))
