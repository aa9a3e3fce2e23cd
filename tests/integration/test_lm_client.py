"""`frontier_signal.lm` against the real server on 127.0.0.1, on the tiny model.

Both providers talk to our server: `signal` through `FRONTIER_SIGNAL_BASE_URL`, `openai` through
`OPENAI_BASE_URL=<root>/v1` with one of our keys (real OpenAI is not reachable here). Requests
are counted with a recording transport (the real `httpx2` transport underneath the `openai`
client), which is how the warmup cache is seen to spare the server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import httpx2
import openai
import pytest

from frontier_signal.lm import (
    AsyncLMClient,
    ConfigError,
    LMClient,
    LMConfig,
    SignalProvider,
    UnifiedLMClient,
    WarmupCache,
    create_chat_completion_async,
    create_provider,
    warmup_model,
)
from tests.conftest import TINY
from tests.integration import sdk_fixtures
from tests.integration.tool_chat import ANSWER, CALL, QUESTION, RESULT, WEATHER

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "lm"

HELLO = [{"role": "user", "content": "Hello"}]
LM_VARIABLES = (
    "FRONTIER_SIGNAL_BASE_URL",
    "FRONTIER_SIGNAL_API_KEY",
    "FRONTIER_SIGNAL_TIMEOUT",
    "FRONTIER_SIGNAL_MAX_RETRIES",
    "FRONTIER_SIGNAL_PROVIDER",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def lm_env(monkeypatch, tmp_path, base_url, alice) -> dict[str, str]:
    """Both providers pointed at the live server with alice's key; no `.env` around."""
    for name in LM_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = {
        "FRONTIER_SIGNAL_BASE_URL": base_url,
        "FRONTIER_SIGNAL_API_KEY": alice,
        "OPENAI_BASE_URL": f"{base_url}/v1",
        "OPENAI_API_KEY": alice,
        "FRONTIER_SIGNAL_MAX_RETRIES": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return env


@pytest.fixture(scope="module")
def http(base_url, alice):
    headers = {"Authorization": f"Bearer {alice}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def tool_run(http) -> str:
    """A run with two steps on the tool format (too few for the tiny model to learn it:
    `test_openai_tools_slow.py` checks parsed calls on SmolLM2)."""
    run = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 8, "lora_alpha": 16})
    assert run.status_code == 200, run.text
    run_id = run.json()["run_id"]
    examples = [{"messages": [QUESTION, CALL, RESULT, ANSWER], "tools": [WEATHER]}]
    for _ in range(2):
        fb = http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": examples})
        assert fb.status_code == 200, fb.text
        step = http.post(f"/v1/runs/{run_id}/optim_step", json={"learning_rate": 1e-3})
        assert step.status_code == 200, step.text
    return run_id


class Recording(httpx2.AsyncBaseTransport):
    """The real async transport, remembering (method, path) of every request."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.calls: list[tuple[str, str]] = []

    async def handle_async_request(self, request):
        self.calls.append((request.method, request.url.path))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=self)


async def fast_poll(seconds: float) -> None:
    """Polls the live server every 50 ms instead of every second (bounded by max_attempts)."""
    await asyncio.sleep(0.05)


# ----- chat, both providers -------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("name", ["signal", "openai"])
async def test_both_providers_chat_with_our_server_and_answer_dicts(lm_env, name):
    async with create_provider(name) as provider:
        response = await provider.create_chat_completion(
            TINY, HELLO, max_tokens=8, seed=1, temperature=1.0
        )
    assert type(response) is dict
    assert response["object"] == "chat.completion" and response["model"] == TINY
    assert response["system_fingerprint"].startswith("fs-")  # our server answered, not OpenAI
    message = response["choices"][0]["message"]
    assert message["role"] == "assistant" and isinstance(message["content"], str)
    usage = response["usage"]
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.anyio
async def test_both_providers_give_the_same_answer_for_the_same_seed(lm_env):
    common = {"max_tokens": 12, "seed": 5, "temperature": 1.0}
    async with UnifiedLMClient() as client:
        signal = await client.create_chat_completion(TINY, HELLO, **common)
        via_openai = await client.create_chat_completion(TINY, HELLO, provider="openai", **common)
    assert signal["choices"][0]["message"] == via_openai["choices"][0]["message"]


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["signal", "openai"])
async def test_streaming_gives_chunk_dicts_adding_up_to_the_plain_answer(lm_env, name):
    common = {"max_tokens": 16, "seed": 3, "temperature": 1.0}
    async with create_provider(name) as provider:
        plain = await provider.create_chat_completion(TINY, HELLO, **common)
        stream = await provider.create_chat_completion(
            TINY, HELLO, stream=True, stream_options={"include_usage": True}, **common
        )
        chunks = [chunk async for chunk in stream]
    assert all(type(c) is dict and c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == plain["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["signal", "openai"])
async def test_tools_tool_choice_and_tool_messages_reach_the_server(lm_env, name):
    async def prompt_tokens(messages, **tool_params) -> int:
        response = await provider.create_chat_completion(
            TINY, messages, max_tokens=1, seed=0, **tool_params
        )
        return response["usage"]["prompt_tokens"]

    async with create_provider(name) as provider:
        bare = await prompt_tokens([QUESTION])
        # The server renders the tools into the prompt; tool_choice="none" leaves them out.
        assert await prompt_tokens([QUESTION], tools=[WEATHER]) > bare + 20
        assert await prompt_tokens([QUESTION], tools=[WEATHER], tool_choice="none") == bare
        # A named tool_choice is validated against the tools sent along.
        unknown = {"type": "function", "function": {"name": "get_time"}}
        with pytest.raises(openai.BadRequestError, match="get_time"):
            await provider.create_chat_completion(
                TINY, [QUESTION], tools=[WEATHER], tool_choice=unknown, max_tokens=1
            )
        # An assistant tool call and the tool's result, as history, are accepted and rendered.
        history = [QUESTION, CALL, RESULT]
        assert await prompt_tokens(history, tools=[WEATHER]) > await prompt_tokens(
            [QUESTION], tools=[WEATHER]
        )


def test_sync_client_chats_streams_and_warms_against_the_server(lm_env, tool_run):
    cache = WarmupCache()
    with LMClient(warmup_cache=cache, sleep=lambda s: time.sleep(0.05)) as client:
        plain = client.chat_completions_create(TINY, HELLO, max_tokens=8, seed=2)
        chunks = list(
            client.chat_completions_create(TINY, HELLO, max_tokens=8, seed=2, stream=True)
        )
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == plain["choices"][0]["message"]["content"]
        assert client.warmup(tool_run, max_attempts=400) is True
    with LMClient(provider="openai") as client:
        via_openai = client.chat_completions_create(TINY, HELLO, max_tokens=8, seed=2)
        assert via_openai["choices"][0]["message"] == plain["choices"][0]["message"]
        assert client.warmup(TINY) is True


@pytest.mark.anyio
async def test_async_client_and_one_shot_answer_from_the_environment(lm_env):
    async with AsyncLMClient() as client:
        response = await client.chat_completions_create(TINY, HELLO, max_tokens=6, seed=4)
    one_shot = await create_chat_completion_async(TINY, HELLO, max_tokens=6, seed=4)
    assert one_shot["choices"][0]["message"] == response["choices"][0]["message"]


@pytest.mark.anyio
async def test_unified_client_closes_every_provider_it_opened(lm_env):
    client = UnifiedLMClient(provider="openai")
    async with client:
        await client.create_chat_completion(TINY, HELLO, max_tokens=4)
        await client.create_chat_completion(TINY, HELLO, provider="signal", max_tokens=4)
        providers = [client.get_provider("signal"), client.get_provider("openai")]
    assert all(p.client.is_closed() for p in providers)


# ----- warmup ---------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("which", ["base", "run", "run_at_step"])
async def test_warmup_reaches_ready_and_the_cache_spares_the_server(lm_env, tool_run, which):
    model = {"base": TINY, "run": tool_run, "run_at_step": f"{tool_run}@2"}[which]
    wire, cache = Recording(), WarmupCache()
    async with SignalProvider(warmup_cache=cache, sleep=fast_poll, http_client=wire.client()) as p:
        assert await p.warmup(model, max_attempts=400) is True
        sent = len(wire.calls)
        assert wire.calls[0] == ("POST", "/v1/warmup")
        assert all(call == ("GET", f"/v1/warmup/{model}") for call in wire.calls[1:])
        assert await p.warmup(model) is True
        assert len(wire.calls) == sent  # answered from the cache
        assert await p.warmup(model, force=True) is True
        assert len(wire.calls) > sent
        # The chat that follows works on the warmed model.
        response = await p.create_chat_completion(model, HELLO, max_tokens=4)
        assert response["model"] == model


@pytest.mark.anyio
async def test_warmup_model_is_false_for_an_unknown_model_and_a_bad_key(lm_env, base_url):
    cache = WarmupCache()
    assert await warmup_model("acme/no-such-model", cache=cache, sleep=fast_poll) is False
    bad = LMConfig(base_url, "sk-not-a-key", max_retries=0)
    assert await warmup_model(TINY, bad, cache=cache, sleep=fast_poll) is False
    good = LMConfig.from_env()
    assert await warmup_model(TINY, good, max_attempts=400, cache=cache, sleep=fast_poll)
    assert cache.is_warm(base_url, TINY)


# ----- errors ---------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("name", ["signal", "openai"])
async def test_server_errors_come_through_as_openai_exceptions(lm_env, name, bob, tool_run):
    async with create_provider(name) as provider:
        with pytest.raises(openai.NotFoundError, match=TINY):  # the message lists our models
            await provider.create_chat_completion("meta-llama/Llama-3.2-3B", HELLO, max_tokens=4)
    async with create_provider(name, api_key=bob) as other_tenant:
        with pytest.raises(openai.NotFoundError):
            await other_tenant.create_chat_completion(tool_run, HELLO, max_tokens=4)
    async with create_provider(name, api_key="sk-not-a-key") as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.create_chat_completion(TINY, HELLO, max_tokens=4)


@pytest.mark.anyio
async def test_missing_configuration_names_the_variable(lm_env, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    async with UnifiedLMClient() as client:
        assert (await client.create_chat_completion(TINY, HELLO, max_tokens=2))["choices"]
        with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
            await client.create_chat_completion(TINY, HELLO, provider="openai", max_tokens=2)
    monkeypatch.delenv("FRONTIER_SIGNAL_API_KEY")
    with pytest.raises(ConfigError, match="FRONTIER_SIGNAL_API_KEY"):
        await create_chat_completion_async(TINY, HELLO)


# ----- the seed's examples --------------------------------------------------------------------
EXPECTED = {
    "basic_usage.py": "",
    "one_shot.py": "One-shot answer: ",
    "provider_switching.py": f"openai: {TINY}",
    "async_client.py": "Finish reason: ",
    "sync_client.py": "Sync answer: ",
    "custom_config.py": "Warm: True",
    "tool_calling.py": "No tool call; answer: ",
    "migration_from_openai.py": "After: ",
    "migration_from_http.py": "After: chat.completion",
}


def test_every_lm_example_is_run_by_this_file():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "_model.py")
    assert scripts == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_the_lm_example_runs_against_a_live_server(script, lm_env):
    env = {k: v for k, v in os.environ.items() if k not in LM_VARIABLES} | lm_env
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert EXPECTED[script] in done.stdout, done.stdout[-2000:]
    assert "sk-" not in done.stdout  # custom_config prints the provider: never the key
