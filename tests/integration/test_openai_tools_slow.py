"""Tools end to end on SmolLM2 through the official `openai` SDK: a run trained briefly (through
the Signal API) on the documented tool format calls the tool, reads its result and answers; a
forced `tool_choice` streams the call; `frontier_signal.lm`'s two providers hand the calls back
as OpenAI's dicts. (SmolLM2's chat template has no tools section: tools go
through the fallback format of engine/tools.py, for training and serving alike.)"""

from __future__ import annotations

import json

import pytest

from frontier_signal.lm import LMConfig, create_provider
from tests.conftest import SMOLLM2
from tests.integration.tool_chat import ANSWER, CALL, QUESTION, RESULT, WEATHER

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

OTHER_QUESTION = {"role": "user", "content": "What is the weather in Oslo?"}
OTHER_CALL = CALL | {
    "tool_calls": [
        CALL["tool_calls"][0]
        | {"function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ]
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


CHAT = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]


@pytest.fixture(scope="module")
def smollm2_tool_run(oai_http) -> str:
    examples = [
        {"messages": [QUESTION, CALL], "tools": [WEATHER]},
        {"messages": [QUESTION, CALL, RESULT, ANSWER], "tools": [WEATHER]},
        {"messages": [OTHER_QUESTION, OTHER_CALL], "tools": [WEATHER]},
        {"messages": CHAT, "tools": [WEATHER]},
    ]
    run = oai_http.post("/v1/runs", json={"base_model": SMOLLM2, "lora_r": 16, "lora_alpha": 32})
    assert run.status_code == 200, run.text
    run_id = run.json()["run_id"]
    for _ in range(14):
        fb = oai_http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": examples})
        assert fb.status_code == 200, fb.text
        step = oai_http.post(f"/v1/runs/{run_id}/optim_step", json={"learning_rate": 2e-3})
        assert step.status_code == 200, step.text
    return run_id


def test_a_tool_call_round_trip(oai, smollm2_tool_run):
    first = oai.chat.completions.create(
        model=smollm2_tool_run, messages=[QUESTION], tools=[WEATHER], temperature=0, max_tokens=40
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    followup = [QUESTION, choice.message.model_dump(exclude_none=True), RESULT]
    followup[-1] = RESULT | {"tool_call_id": call.id}
    second = oai.chat.completions.create(
        model=smollm2_tool_run, messages=followup, tools=[WEATHER], temperature=0, max_tokens=40
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == ANSWER["content"]
    assert not second.choices[0].message.tool_calls


def test_a_plain_question_gets_a_plain_answer_with_tools_offered(oai, smollm2_tool_run):
    reply = oai.chat.completions.create(
        model=smollm2_tool_run, messages=CHAT[:1], tools=[WEATHER], temperature=0, max_tokens=20
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == "Hello!"


def test_a_named_tool_choice_forces_the_call_and_streams_it(oai, smollm2_tool_run):
    forced = {"type": "function", "function": {"name": "get_weather"}}
    common = {
        "model": smollm2_tool_run,
        "messages": [OTHER_QUESTION],
        "tools": [WEATHER],
        "tool_choice": forced,
        "temperature": 0,
        "max_tokens": 40,
    }
    plain = oai.chat.completions.create(**common).choices[0]
    assert plain.finish_reason == "tool_calls"
    assert json.loads(plain.message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    chunks = list(oai.chat.completions.create(**common, stream=True))
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [json.loads(tc.function.arguments) for tc in calls] == [{"city": "Oslo"}]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["signal", "openai"])
async def test_a_tool_call_round_trip_through_the_provider(server, alice, smollm2_tool_run, name):
    root = server.base_url if name == "signal" else f"{server.base_url}/v1"
    async with create_provider(name, config=LMConfig(root, alice, max_retries=0)) as provider:
        assert await provider.warmup(smollm2_tool_run) is True
        first = await provider.create_chat_completion(
            smollm2_tool_run,
            [QUESTION],
            tools=[WEATHER],
            tool_choice="auto",
            temperature=0,
            max_tokens=40,
        )
        choice = first["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice["message"]["content"]
        [call] = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"].startswith("call_")
        assert call["function"]["name"] == "get_weather"
        assert isinstance(call["function"]["arguments"], str)
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}

        assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
        result = RESULT | {"tool_call_id": call["id"]}
        second = await provider.create_chat_completion(
            smollm2_tool_run,
            [QUESTION, assistant, result],
            tools=[WEATHER],
            temperature=0,
            max_tokens=40,
        )
    assert second["choices"][0]["finish_reason"] == "stop"
    assert not second["choices"][0]["message"].get("tool_calls")
    assert second["choices"][0]["message"]["content"] == ANSWER["content"]
