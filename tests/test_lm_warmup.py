"""Warmup polling and its 10-minute cache, with a fake clock and a fake sleep.

A scripted `httpx2.MockTransport` (the transport library under the `openai` client) plays the
server's `/v1/warmup` answers here; `tests/integration/test_lm_client.py` warms models on the
real server.
"""

from __future__ import annotations

import json

import httpx2
import pytest

from frontier_signal.lm import LMClient, LMConfig, SignalProvider, WarmupCache, warmup_model

CONFIG = LMConfig("http://signal.test", "sk-test", max_retries=0)


@pytest.fixture
def anyio_backend():
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSleep:
    """Records the waits and advances the fake clock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds

    def sync(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


class WarmupServer:
    """Answers each warmup request with the next status (the last one repeats)."""

    def __init__(self, *statuses: str) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status.isdigit():
            body = {"error": {"message": "nope", "type": "x", "code": None, "param": None}}
            return httpx2.Response(int(status), json=body)
        model = json.loads(request.content)["model"] if request.method == "POST" else "?"
        return httpx2.Response(200, json={"model": model, "status": status, "detail": None})

    def async_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self))

    def sync_client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self))

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.raw_path.decode()) for r in self.requests]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep(clock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
def cache(clock) -> WarmupCache:
    return WarmupCache(clock=clock)


def test_cache_entries_expire_after_ten_minutes(clock, cache):
    cache.mark_warm("http://a", "m")
    clock.now += 599.0
    assert cache.is_warm("http://a", "m")
    assert not cache.is_warm("http://b", "m") and not cache.is_warm("http://a", "other")
    clock.now += 1.0
    assert not cache.is_warm("http://a", "m")


@pytest.mark.anyio
async def test_ready_model_is_cached_for_ten_minutes_then_asked_again(clock, sleep, cache):
    server = WarmupServer("ready")
    provider = SignalProvider(
        CONFIG, warmup_cache=cache, sleep=sleep, http_client=server.async_client()
    )
    async with provider:
        assert await provider.warmup("base/model") is True
        clock.now += 599.0
        assert await provider.warmup("base/model") is True
        assert server.calls == [("POST", "/v1/warmup")]
        clock.now += 1.0
        assert await provider.warmup("base/model") is True
    assert server.calls == [("POST", "/v1/warmup"), ("POST", "/v1/warmup")]
    assert sleep.waits == []


@pytest.mark.anyio
async def test_force_asks_the_server_despite_the_cache(sleep, cache):
    server = WarmupServer("ready")
    provider = SignalProvider(
        CONFIG, warmup_cache=cache, sleep=sleep, http_client=server.async_client()
    )
    async with provider:
        assert await provider.warmup("m") is True
        assert await provider.warmup("m", force=True) is True
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_loading_model_is_polled_once_a_second_until_ready(sleep, cache):
    server = WarmupServer("loading", "loading", "loading", "ready")
    ok = await warmup_model(
        "run_abc:ckpt-2",
        CONFIG,
        cache=cache,
        sleep=sleep,
        http_client=server.async_client(),
    )
    assert ok is True
    assert server.calls == [("POST", "/v1/warmup")] + [("GET", "/v1/warmup/run_abc:ckpt-2")] * 3
    assert sleep.waits == [1.0, 1.0, 1.0]
    assert cache.is_warm("http://signal.test", "run_abc:ckpt-2")


@pytest.mark.anyio
async def test_a_poll_answering_not_loaded_asks_for_the_model_again(sleep, cache):
    server = WarmupServer("loading", "not_loaded", "loading", "ready")
    ok = await warmup_model(
        "m", CONFIG, cache=cache, sleep=sleep, http_client=server.async_client()
    )
    assert ok is True
    assert [method for method, _ in server.calls] == ["POST", "GET", "POST", "GET"]


@pytest.mark.anyio
async def test_model_names_keep_slashes_and_colons_in_the_poll_path(sleep, cache):
    server = WarmupServer("loading", "ready")
    model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert await warmup_model(
        model, CONFIG, cache=cache, sleep=sleep, http_client=server.async_client()
    )
    assert server.calls[1] == ("GET", f"/v1/warmup/{model}")
    assert json.loads(server.requests[0].content) == {"model": model}
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"


@pytest.mark.anyio
async def test_still_loading_after_max_attempts_is_false_after_exactly_that_many_requests(
    sleep, cache
):
    server = WarmupServer("loading")
    ok = await warmup_model(
        "m", CONFIG, max_attempts=5, cache=cache, sleep=sleep, http_client=server.async_client()
    )
    assert ok is False
    assert len(server.requests) == 5 and sleep.waits == [1.0] * 4
    assert not cache.is_warm("http://signal.test", "m")


@pytest.mark.anyio
@pytest.mark.parametrize("answers", [("error",), ("loading", "error"), ("404",), ("500",)])
async def test_errors_become_false_and_are_not_cached(sleep, cache, answers):
    server = WarmupServer(*answers)
    client = server.async_client()
    ok = await warmup_model("m", CONFIG, cache=cache, sleep=sleep, http_client=client)
    assert ok is False
    assert not cache.is_warm("http://signal.test", "m")


@pytest.mark.anyio
async def test_unreachable_server_is_false_not_an_exception(sleep, cache):
    def refuse(request):
        raise httpx2.ConnectError("connection refused", request=request)

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
    assert await warmup_model("m", CONFIG, cache=cache, sleep=sleep, http_client=client) is False


@pytest.mark.anyio
async def test_missing_configuration_is_false_not_an_exception(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("FRONTIER_SIGNAL_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert await warmup_model("m") is False
    assert "FRONTIER_SIGNAL_API_KEY" in caplog.text


@pytest.mark.anyio
async def test_cache_is_per_server(sleep, cache):
    server = WarmupServer("ready")
    other = LMConfig("http://other.test/v1", "sk-test", max_retries=0)
    for config in (CONFIG, other, CONFIG, other):
        assert await warmup_model(
            "m", config, cache=cache, sleep=sleep, http_client=server.async_client()
        )
    assert [r.url.host for r in server.requests] == ["signal.test", "other.test"]


def test_sync_client_warms_with_the_same_rules(clock, sleep, cache):
    server = WarmupServer("loading", "ready")
    with LMClient(
        CONFIG, warmup_cache=cache, sleep=sleep.sync, http_client=server.sync_client()
    ) as client:
        assert client.warmup("m") is True
        assert client.warmup("m") is True
        assert server.calls == [("POST", "/v1/warmup"), ("GET", "/v1/warmup/m")]
        clock.now += 600.0
        assert client.warmup("m") is True
        assert len(server.requests) == 3
    assert sleep.waits == [1.0]
