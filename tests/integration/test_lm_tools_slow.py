"""Tool calls through `frontier_signal.lm` on SmolLM2, both providers: a run trained briefly on
the tool format calls the tool, and the client hands back OpenAI's tool-call dicts (`id`,
`type: "function"`, JSON-string `arguments`); the tool's result goes back and the run answers.
The model's output is never faked: the tiny model cannot learn the format, SmolLM2 can."""

from __future__ import annotations

import json

import httpx
import pytest

from frontier_signal.lm import LMConfig, create_provider
from tests.conftest import SMOLLM2
from tests.integration import sdk_fixtures
from tests.integration.test_lm_client import ANSWER, CALL, QUESTION, RESULT, WEATHER

pytestmark = pytest.mark.slow
one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

# The recipe of tests/integration/test_openai_tools_slow.py, which the server's tests proved.
OTHER_QUESTION = {"role": "user", "content": "What is the weather in Oslo?"}
OTHER_CALL = CALL | {
    "tool_calls": [
        CALL["tool_calls"][0]
        | {"function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ]
}
CHAT = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def smollm2_tool_run(base_url, alice) -> str:
    examples = [
        {"messages": [QUESTION, CALL], "tools": [WEATHER]},
        {"messages": [QUESTION, CALL, RESULT, ANSWER], "tools": [WEATHER]},
        {"messages": [OTHER_QUESTION, OTHER_CALL], "tools": [WEATHER]},
        {"messages": CHAT, "tools": [WEATHER]},
    ]
    headers = {"Authorization": f"Bearer {alice}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=300) as http:
        run = http.post("/v1/runs", json={"base_model": SMOLLM2, "lora_r": 16, "lora_alpha": 32})
        assert run.status_code == 200, run.text
        run_id = run.json()["run_id"]
        for _ in range(14):
            fb = http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": examples})
            assert fb.status_code == 200, fb.text
            step = http.post(f"/v1/runs/{run_id}/optim_step", json={"learning_rate": 2e-3})
            assert step.status_code == 200, step.text
    return run_id


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["signal", "openai"])
async def test_a_tool_call_round_trip_through_the_provider(base_url, alice, smollm2_tool_run, name):
    root = base_url if name == "signal" else f"{base_url}/v1"
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
