"""The Anthropic-compatible face driven by the official `anthropic` SDK against the real server on
127.0.0.1, on the tiny model: the same models, runs, keys and tenant isolation as the OpenAI
face, Anthropic's shapes and streaming events."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from tests.conftest import TINY
from tests.integration.sdk_fixtures import wait_ready

anthropic = pytest.importorskip("anthropic")

HELLO = [{"role": "user", "content": "Say hello to the harbour."}]
# anthropic 2.x's `create` has no temperature argument any more: the body field still works.
GREEDY = {"model": TINY, "max_tokens": 12, "extra_body": {"temperature": 0.0}}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def claude(server, alice):
    wait_ready(server.base_url)
    with anthropic.Anthropic(base_url=server.base_url, api_key=alice, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def alice_run(server, alice) -> str:
    headers = {"Authorization": f"Bearer {alice}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as http:
        answer = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4, "lora_alpha": 8})
        assert answer.status_code == 200, answer.text
        return answer.json()["run_id"]


def test_a_plain_message_answers_in_anthropics_shape(claude):
    answer = claude.messages.create(messages=HELLO, **GREEDY)
    assert answer.type == "message" and answer.role == "assistant" and answer.model == TINY
    [block] = answer.content
    assert block.type == "text" and block.text
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert answer.usage.output_tokens <= 12 and answer.usage.input_tokens > 5
    assert answer.id.startswith("msg_")


def test_a_system_prompt_string_or_blocks_reaches_the_prompt(claude):
    bare = claude.messages.count_tokens(model=TINY, messages=HELLO).input_tokens
    system = "You are a pirate. Answer like one."
    as_text = claude.messages.count_tokens(model=TINY, messages=HELLO, system=system)
    as_blocks = claude.messages.count_tokens(
        model=TINY, messages=HELLO, system=[{"type": "text", "text": system}]
    )
    assert as_text.input_tokens == as_blocks.input_tokens != bare
    answer = claude.messages.create(messages=HELLO, system=system, **GREEDY)
    assert answer.usage.input_tokens == as_text.input_tokens


def test_the_stream_adds_up_to_the_plain_answer(claude, server, alice):
    plain = claude.messages.create(messages=HELLO, **GREEDY)
    with claude.messages.stream(messages=HELLO, **GREEDY) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == plain.content[0].text == final.content[0].text
    assert final.stop_reason == plain.stop_reason
    assert final.usage.output_tokens == plain.usage.output_tokens
    # The event names and their order are Anthropic's.
    body = {"model": TINY, "max_tokens": 12, "temperature": 0, "messages": HELLO, "stream": True}
    headers = {"x-api-key": alice, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        raw = http.post("/v1/messages", json=body, headers=headers).text
    names = [line[len("event: ") :] for line in raw.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_stop_sequences_cut_the_text_and_are_reported(claude):
    text = claude.messages.create(messages=HELLO, **GREEDY).content[0].text
    assert len(text) > 8
    stop = text[4:7]
    cut = claude.messages.create(messages=HELLO, stop_sequences=[stop], **GREEDY)
    assert cut.content[0].text == text[: text.index(stop)]
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    with claude.messages.stream(messages=HELLO, stop_sequences=[stop], **GREEDY) as stream:
        assert "".join(stream.text_stream) == cut.content[0].text
        assert stream.get_final_message().stop_sequence == stop


def test_tool_use_and_tool_result_round_trip(claude):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "tool", "name": "get_weather"}
    answer = claude.messages.create(
        model=TINY, max_tokens=40, messages=ask, tools=[WEATHER], tool_choice=forced
    )
    assert answer.stop_reason == "tool_use"
    [use] = [b for b in answer.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    jsonschema.validate(use.input, WEATHER["input_schema"])
    with claude.messages.stream(
        model=TINY, max_tokens=40, messages=ask, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    [streamed] = [b for b in final.content if b.type == "tool_use"]
    jsonschema.validate(streamed.input, WEATHER["input_schema"])
    history = ask + [
        {"role": "assistant", "content": [b.model_dump() for b in answer.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}],
        },
    ]
    before = claude.messages.count_tokens(model=TINY, messages=ask, tools=[WEATHER])
    after = claude.messages.count_tokens(model=TINY, messages=history, tools=[WEATHER])
    assert after.input_tokens > before.input_tokens + 10
    reply = claude.messages.create(
        model=TINY, max_tokens=8, messages=history, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in reply.content] == ["text"]


def test_output_config_json_schema_makes_the_answer_schema_valid_json(claude):
    schema = WEATHER["input_schema"]
    answer = claude.messages.create(
        model=TINY,
        max_tokens=40,
        messages=[{"role": "user", "content": "The weather city, as JSON."}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert answer.stop_reason == "end_turn"
    jsonschema.validate(json.loads(answer.content[0].text), schema)


def test_runs_are_models_and_another_tenants_run_is_not_found(claude, alice_run, server, bob):
    for model in (alice_run, f"{alice_run}@0"):
        answer = claude.messages.create(model=model, max_tokens=4, messages=HELLO)
        assert answer.model == model
    with anthropic.Anthropic(base_url=server.base_url, api_key=bob, max_retries=0) as other:
        with pytest.raises(anthropic.NotFoundError, match="not found") as raised:
            other.messages.create(model=alice_run, max_tokens=4, messages=HELLO)
        assert raised.value.body["error"]["type"] == "not_found_error"
    with anthropic.Anthropic(base_url=server.base_url, auth_token=bob, max_retries=0) as bearer:
        assert bearer.messages.count_tokens(model=TINY, messages=HELLO).input_tokens > 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": HELLO}, "max_tokens"),
        ({"max_tokens": 4, "messages": [{"role": "system", "content": "x"}]}, "role"),
        (
            {
                "max_tokens": 4,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            },
            "image",
        ),
        ({"max_tokens": 4, "messages": HELLO, "temperature": 3}, "temperature"),
        ({"max_tokens": 4, "messages": HELLO, "tool_choice": {"type": "any"}}, "needs tools"),
        ({"max_tokens": 99999, "messages": HELLO}, "max_tokens"),
    ],
)
def test_bad_input_is_a_400_in_anthropics_error_shape(server, alice, body, needle):
    headers = {"x-api-key": alice, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        answer = http.post("/v1/messages", json={"model": TINY, **body}, headers=headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert needle in error["error"]["message"]


def test_the_sdk_raises_its_errors_for_bad_input_and_bad_keys(claude, server):
    with pytest.raises(anthropic.BadRequestError, match="block type"):
        claude.messages.create(
            model=TINY, max_tokens=4, messages=[{"role": "user", "content": [{"type": "document"}]}]
        )
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="claude-3-5-sonnet", max_tokens=4, messages=HELLO)
    bad = anthropic.Anthropic(base_url=server.base_url, api_key="sk-fs-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        bad.messages.create(model=TINY, max_tokens=4, messages=HELLO)
    assert raised.value.body["error"]["type"] == "authentication_error"
    json.dumps(raised.value.body)
