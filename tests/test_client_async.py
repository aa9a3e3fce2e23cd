"""The async SDK's retry loop over scripted `httpx.MockTransport` answers (see the sync twin).

What the async SDK does with the real server's answers is tested in
`tests/integration/test_sdk_async.py`.
"""

from __future__ import annotations

import httpx
import pytest

from frontier_signal import AsyncSignalClient, AsyncTrainingClient, RateLimitError, ServerError

BASE = "http://signal.test"
RUN = "run_0001"
STEP = {"step": 1, "learning_rate": 3e-4, "grad_norm": 0.5, "metrics": {}}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def error(status: int, message: str = "busy", **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "test_error", "code": None, "param": None}}
    return httpx.Response(status, json=body, headers={"x-request-id": "req_test", **headers})


class Script:
    """Answers requests with the given outcomes in order (a response, or an exception raised)."""

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def no_wait(sleeps):
    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    return no_wait


def client_for(script: Script, no_wait, **kwargs) -> AsyncSignalClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(script))
    return AsyncSignalClient("sk-test", BASE, http_client=http, sleep=no_wait, **kwargs)


async def test_async_retries_honour_retry_after_and_keep_the_idempotency_key(no_wait, sleeps):
    script = Script(
        error(429, **{"retry-after": "4"}), httpx.ReadError("reset"), httpx.Response(200, json=STEP)
    )
    assert (await client_for(script, no_wait).optim_step(RUN))["step"] == 1
    assert sleeps[0] == 4.0 and 0.375 <= sleeps[1] <= 1.0
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1


async def test_async_retries_stop_after_max_retries_with_the_last_error(no_wait, sleeps):
    script = Script(*[error(429, **{"retry-after": "1"})] * 2)
    with pytest.raises(RateLimitError) as caught:
        await client_for(script, no_wait, max_retries=1).list_runs()
    assert caught.value.retry_after == 1.0 and sleeps == [1.0]


async def test_async_x_should_retry_false_is_not_retried(no_wait, sleeps):
    script = Script(
        error(502, "hub unreachable; saved locally at /x", **{"x-should-retry": "false"})
    )
    with pytest.raises(ServerError, match="saved locally"):
        await client_for(script, no_wait).save_state(RUN, push_to_hub=True, hub_model_id="me/m")
    assert len(script.requests) == 1 and sleeps == []


async def test_a_standalone_async_training_client_takes_key_and_url_like_the_guide():
    async with AsyncTrainingClient(run_id=RUN, api_key="sk-x", base_url=BASE) as training:
        assert (training.timeout, training.max_retries) == (3600, 3)
        pool = training._transport.http_client
    assert pool.is_closed
