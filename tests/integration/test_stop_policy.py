"""One stop policy on every face (service/sampling.py): the same greedy request stops at the
same place through the Signal, Tinker, OpenAI and Anthropic faces, streamed or not, and the
streams (one token bridge, service/streaming.py) add up to the finished text."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import TINY

PROMPT = "The capital of France is"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def http(server, alice):
    headers = {"X-API-Key": alice, "Authorization": f"Bearer {alice}"}  # Tinker; the others
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def run_id(http) -> str:
    # A fresh LoRA adds nothing (B = 0): the run samples exactly as its base model does.
    response = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4, "bf16": False})
    return response.json()["run_id"]


def _sse(http, path: str, body: dict) -> list[dict]:
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: {")]
    return [json.loads(line) for line in lines]


def _signal(http, run_id, stop: list[str]) -> tuple[str, str, str]:
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0.0, "stop": stop}
    whole = http.post(f"/v1/runs/{run_id}/sample", json=body).json()
    events = _sse(http, f"/v1/runs/{run_id}/sample/stream", body)
    streamed = "".join(e["text"] for e in events)
    return whole["outputs"][0], whole["finish_reasons"][0], streamed


def _openai(http, model, stop: list[str]) -> tuple[str, str, str]:
    body = {"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0.0}
    body["stop"] = stop or None
    whole = http.post("/v1/completions", json=body).json()["choices"][0]
    chunks = _sse(http, "/v1/completions", body | {"stream": True})
    streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    return whole["text"], whole["finish_reason"], streamed


def _tinker(http, tiny_tokenizer, stop: list[str]) -> tuple[str, str]:
    tokens = tiny_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    body = {
        "base_model": TINY,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": tokens}]},
        "num_samples": 1,
        "sampling_params": {"max_tokens": MAX_TOKENS, "temperature": 0.0, "stop": stop},
    }
    [sequence] = http.post("/api/v1/sample", json=body).json()["sequences"]
    text = tiny_tokenizer.decode(sequence["tokens"], skip_special_tokens=False)
    for marker in stop:  # tinker answers tokens; the text is cut where the stop string begins
        text = text.split(marker)[0]
    return text, sequence["stop_reason"]


def test_the_same_request_stops_at_the_same_place_on_every_face(http, run_id, tiny_tokenizer):
    free, _, _ = _openai(http, run_id, [])
    assert len(free) > 4, f"the tiny model said too little to place a stop in: {free!r}"
    stop = free[len(free) // 2 : len(free) // 2 + 2]
    expected = free[: free.index(stop)]

    signal_text, signal_finish, signal_streamed = _signal(http, run_id, [stop])
    openai_text, openai_finish, openai_streamed = _openai(http, run_id, [stop])
    base_text, _, _ = _openai(http, TINY, [stop])
    tinker_text, tinker_finish = _tinker(http, tiny_tokenizer, [stop])

    assert signal_text == openai_text == base_text == tinker_text == expected
    assert signal_finish == openai_finish == tinker_finish == "stop"
    assert signal_streamed == openai_streamed == expected


def test_without_stops_every_face_runs_to_max_tokens_or_eos_alike(http, run_id, tiny_tokenizer):
    signal_text, signal_finish, signal_streamed = _signal(http, run_id, [])
    openai_text, openai_finish, openai_streamed = _openai(http, run_id, [])
    tinker_text, tinker_finish = _tinker(http, tiny_tokenizer, [])
    eos = tiny_tokenizer.eos_token or ""
    assert signal_text == openai_text == signal_streamed == openai_streamed
    assert tinker_text.removesuffix(eos) == signal_text  # tinker's tokens keep the EOS token
    assert signal_finish == openai_finish == tinker_finish


def test_chat_faces_stop_alike(http, run_id):
    messages = [{"role": "user", "content": "Say something about Paris."}]
    chat = {"model": run_id, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0.0}
    free = http.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
    assert len(free) > 4, f"the tiny model said too little to place a stop in: {free!r}"
    stop = free[len(free) // 2 : len(free) // 2 + 2]
    expected = free[: free.index(stop)]

    openai = http.post("/v1/chat/completions", json=chat | {"stop": [stop]}).json()
    messages_body = {
        "model": run_id,
        "messages": messages,
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stop_sequences": [stop],
    }
    anthropic = http.post("/v1/messages", json=messages_body).json()
    events = _sse(http, "/v1/messages", messages_body | {"stream": True})
    streamed = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert openai["choices"][0]["message"]["content"] == expected
    assert anthropic["content"][0]["text"] == expected == streamed
    assert anthropic["stop_reason"] == "stop_sequence" and anthropic["stop_sequence"] == stop
