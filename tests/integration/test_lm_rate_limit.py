"""Retries on 429: a live server allowing one request in flight per key, and two at once.

The first request streams a long answer, which holds the key's only slot; a second request
meanwhile gets 429 with `Retry-After: 1`. With `max_retries=0` the `openai` client's
`RateLimitError` comes through; with retries left, the `openai` client's own backoff waits and
the request goes through once the slot frees.
"""

from __future__ import annotations

import asyncio

import httpx2
import openai
import pytest

from frontier_signal.lm import LMConfig, create_provider
from tests.conftest import TINY
from tests.integration import sdk_fixtures
from tests.integration.conftest import make_key, server_settings
from tests.live_server import LiveServer

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def server(data_dir):
    live = LiveServer(server_settings(data_dir, max_queued_per_tenant=1)).start()
    yield live
    live.stop()


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Recording(httpx2.AsyncBaseTransport):
    """The real async transport, remembering the status of every answer."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.statuses: list[int] = []

    async def handle_async_request(self, request):
        response = await self.inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def hold_the_slot(provider):
    """Start a long streamed answer and wait for its first token: the slot is now taken."""
    stream = await provider.create_chat_completion(
        TINY, HELLO, stream=True, max_tokens=1000, ignore_eos=True, temperature=1.0, seed=1
    )
    async for chunk in stream:
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            return stream
    raise AssertionError("the long answer ended before its first token")


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["signal", "openai"])
async def test_second_request_in_flight_is_retried_after_429_until_it_goes_through(
    base_url, data_dir, name
):
    key = make_key(data_dir, f"limited-{name}")
    root = base_url if name == "signal" else f"{base_url}/v1"
    holder = create_provider(name, config=LMConfig(root, key, max_retries=0))
    impatient_wire, patient_wire = Recording(), Recording()
    impatient = create_provider(
        name,
        config=LMConfig(root, key, max_retries=0),
        http_client=httpx2.AsyncClient(transport=impatient_wire),
    )
    patient = create_provider(
        name,
        config=LMConfig(root, key, max_retries=30),
        http_client=httpx2.AsyncClient(transport=patient_wire),
    )
    async with holder, impatient, patient:
        stream = await hold_the_slot(holder)
        with pytest.raises(openai.RateLimitError) as caught:
            await impatient.create_chat_completion(TINY, HELLO, max_tokens=2)
        assert caught.value.status_code == 429
        assert caught.value.response.headers["retry-after"] == "1"
        assert impatient_wire.statuses == [429]  # max_retries=0: one try, no loop of ours

        patient_call = asyncio.ensure_future(
            patient.create_chat_completion(TINY, HELLO, max_tokens=2)
        )
        for _ in range(500):  # bounded: 5 s for the first answer to the patient client
            if patient_wire.statuses:
                break
            await asyncio.sleep(0.01)
        assert patient_wire.statuses == [429]
        async for _ in stream:  # the holder reads its answer to the end, freeing the slot
            pass
        response = await asyncio.wait_for(patient_call, timeout=60)
    assert response["choices"][0]["message"]["role"] == "assistant"
    assert patient_wire.statuses[0] == 429 and patient_wire.statuses[-1] == 200
    assert set(patient_wire.statuses[:-1]) == {429}  # retried by the openai client alone
