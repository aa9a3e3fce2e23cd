"""The async SDK over `httpx.MockTransport`: same behaviour as the sync one, concurrency added."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fake_signal import MODELS, FakeSignal, error
from frontier_signal import (
    AsyncInferenceClient,
    AsyncSignalClient,
    AsyncSignalRun,
    AsyncTrainingClient,
    NotFoundError,
    ValidationError,
)

BASE = "http://signal.test"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def server():
    return FakeSignal()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
async def client(server, sleeps):
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    http = httpx.AsyncClient(transport=server.transport())
    async with AsyncSignalClient("sk-test", BASE, http_client=http, sleep=fake_sleep) as client:
        yield client
    await http.aclose()


async def test_async_create_run_returns_an_async_run_that_trains(client, server):
    run = await client.create_run(base_model=MODELS[0])
    assert isinstance(run, AsyncSignalRun)
    result = await run.forward_backward([{"text": "hello"}])
    assert (result["loss"], result["step"]) == (2.0, 1)
    assert (await run.optim_step())["step"] == 1
    assert (await run.sample(["p"]))["outputs"] == ["p -> #1"]
    assert (await run.save_state())["mode"] == "adapter"
    assert (await client.list_models()) == MODELS
    assert [r["run_id"] for r in await client.list_runs()] == [run.run_id]


async def test_async_retries_honour_retry_after_and_keep_the_idempotency_key(
    client, server, sleeps
):
    run = await client.create_run(base_model=MODELS[0])
    path = f"/v1/runs/{run.run_id}/optim_step"
    server.fail_next(path, error(429, "busy", **{"retry-after": "4"}), httpx.ReadError("reset"))
    assert (await run.optim_step())["step"] == 1
    assert sleeps[0] == 4.0 and 0.375 <= sleeps[1] <= 1.0
    keys = {r.headers["idempotency-key"] for r in server.posts(path)}
    assert len(server.posts(path)) == 3 and len(keys) == 1


async def test_async_errors_map_to_the_same_exceptions(client, server, sleeps):
    with pytest.raises(NotFoundError) as caught:
        await client.get_run("run_missing")
    assert caught.value.status_code == 404 and caught.value.request_id == "req_test"
    with pytest.raises(ValidationError):
        await client.forward_backward("run_missing", [])
    assert sleeps == []


async def test_async_batch_sample_runs_chunks_concurrently_and_keeps_order(client, server):
    run = await client.create_run(base_model=MODELS[0])
    in_flight = peak = 0
    handle = server.handle

    async def slow_handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return handle(request)

    client._transport.http_client._transport = httpx.MockTransport(slow_handler)
    inference = run.inference(batch_size=2)
    assert isinstance(inference, AsyncInferenceClient)
    prompts = [f"p{i}" for i in range(7)]
    outputs = await inference.batch_sample(prompts, max_tokens=5)
    assert [o.split(" -> ")[0] for o in outputs] == prompts
    assert len(server.posts(f"/v1/runs/{run.run_id}/sample")) == 4
    assert peak > 1


async def test_async_cache_and_stream_and_embeddings(client, server):
    run = await client.create_run(base_model=MODELS[0])
    inference = client.inference(run.run_id)
    inference.enable_cache()
    first = await inference.sample(["same"])
    assert await inference.sample(["same"]) == first
    assert inference.get_cache_stats()["hits"] == 1
    events = [event async for event in inference.stream_sample("Hello")]
    assert events[0]["text"] == "Hi" and events[-1]["finish_reason"] == "length"
    assert await inference.embeddings(["abc"]) == [[3.0, 1.0]]


async def test_async_training_client_epochs_over_sync_and_async_iterables(client, server):
    run = await client.create_run(base_model=MODELS[0])

    async def batches():
        for i in range(2):
            yield [{"text": f"x{i}"}]

    async with client.training(run.run_id) as training:
        assert isinstance(training, AsyncTrainingClient)
        summary = await training.train_epoch(batches(), progress=False)
        assert (summary["steps"], summary["tokens"]) == (2, 20)
        summary = await training.train_epoch([[{"text": "y"}]], progress=False)
        assert summary["avg_loss"] == pytest.approx(2 / 3)
        metrics = await training.get_metrics()
        assert metrics["current_step"] == 3 and len(metrics["loss_history"]) == 3
    assert not client._transport.http_client.is_closed


async def test_a_standalone_async_training_client_takes_key_and_url_like_the_guide(server):
    async with AsyncTrainingClient(run_id="run_0000", api_key="sk-x", base_url=BASE) as training:
        assert (training.timeout, training.max_retries) == (3600, 3)
        pool = training._transport.http_client
    assert pool.is_closed
