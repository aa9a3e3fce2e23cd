"""What the providers send and what they hand back, over a scripted `httpx2.MockTransport`.

Plain dicts out (tool-call arguments stay JSON strings), unknown parameters in the body,
streams as chunk dicts, and the `openai` client's retries as the only retry loop. The same
behaviour against the real server is in `tests/integration/test_lm_client.py`.
"""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from frontier_signal.lm import AsyncLMClient, LMClient, LMConfig, SignalProvider
from frontier_signal.lm._chat import chat_kwargs

CONFIG = LMConfig("http://signal.test", "sk-test", max_retries=0)
MESSAGES = [{"role": "user", "content": "What's the weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]
TOOL_CALL_RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    }
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Recorder:
    """Answers every request with the next response (the last repeats), recording requests."""

    def __init__(self, *responses: httpx2.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].content)


def rate_limited() -> httpx2.Response:
    body = {"error": {"message": "slow down", "type": "rate_limit", "code": None, "param": None}}
    return httpx2.Response(429, json=body, headers={"retry-after-ms": "1"})


def test_unknown_parameters_go_in_the_body_and_none_is_left_out():
    kwargs = chat_kwargs(
        "m", MESSAGES, None, None, False, {"temperature": 0.5, "top_k": 5, "seed": None}
    )
    assert kwargs == {
        "model": "m",
        "messages": MESSAGES,
        "temperature": 0.5,
        "extra_body": {"top_k": 5},
    }


@pytest.mark.anyio
async def test_chat_answers_a_plain_dict_with_tool_calls_as_json_strings():
    server = Recorder(httpx2.Response(200, json=TOOL_CALL_RESPONSE))
    async with SignalProvider(
        CONFIG, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server))
    ) as provider:
        response = await provider.create_chat_completion(
            "m", MESSAGES, tools=TOOLS, tool_choice="auto", max_tokens=20, top_k=3
        )
    assert type(response) is dict
    call = response["choices"][0]["message"]["tool_calls"][0]
    assert call == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
    }
    assert str(server.requests[0].url) == "http://signal.test/v1/chat/completions"
    sent = server.body()
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto"
    assert (sent["max_tokens"], sent["top_k"]) == (20, 3)


def sse(*events: dict) -> httpx2.Response:
    text = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return httpx2.Response(200, text=text, headers={"content-type": "text/event-stream"})


CHUNKS = [
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece}}],
    }
    for piece in ("Hel", "lo")
]


@pytest.mark.anyio
async def test_stream_yields_chunk_dicts():
    server = Recorder(sse(*CHUNKS))
    async with AsyncLMClient(
        CONFIG, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server))
    ) as client:
        stream = await client.chat_completions_create("m", MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]
    assert all(type(chunk) is dict for chunk in chunks)
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Hello"
    assert server.body()["stream"] is True


def test_sync_client_answers_dicts_and_streams_chunk_dicts():
    server = Recorder(httpx2.Response(200, json=TOOL_CALL_RESPONSE), sse(*CHUNKS))
    http = httpx2.Client(transport=httpx2.MockTransport(server))
    with LMClient(CONFIG, http_client=http) as client:
        response = client.chat_completions_create("m", MESSAGES, tools=TOOLS)
        chunks = list(client.chat_completions_create("m", MESSAGES, stream=True))
    assert response["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["Hel", "lo"]


@pytest.mark.anyio
async def test_429_is_retried_by_the_openai_client_up_to_max_retries_only():
    config = LMConfig("http://signal.test", "sk-test", max_retries=2)
    server = Recorder(rate_limited())
    async with SignalProvider(
        config, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server))
    ) as provider:
        with pytest.raises(openai.RateLimitError):
            await provider.create_chat_completion("m", MESSAGES)
    assert len(server.requests) == 3  # one try + max_retries, no second loop on top

    server = Recorder(rate_limited(), httpx2.Response(200, json=TOOL_CALL_RESPONSE))
    async with SignalProvider(
        config, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server))
    ) as provider:
        response = await provider.create_chat_completion("m", MESSAGES)
    assert response["id"] == "chatcmpl-1" and len(server.requests) == 2
