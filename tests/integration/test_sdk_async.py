"""The async SDK against a live server: the same behaviour as the sync one, concurrency added."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from frontier_signal import (
    AsyncInferenceClient,
    AsyncSignalClient,
    AsyncSignalRun,
    AsyncTrainingClient,
    NotFoundError,
    RateLimitError,
    RunConfig,
    TrainingExample,
    ValidationError,
)
from tests.conftest import TINY
from tests.integration import sdk_fixtures
from tests.integration.conftest import make_key, server_settings
from tests.integration.sdk_fixtures import AsyncWire, wait_ready
from tests.live_server import LiveServer

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

pytestmark = pytest.mark.anyio

TEXT = {"text": "The capital of Zorbia is Quellmar."}
CHAT = {
    "messages": [
        {"role": "user", "content": "What is the capital of Zorbia?"},
        {"role": "assistant", "content": "Quellmar."},
    ]
}
GREEDY = {"max_tokens": 4, "temperature": 0.0}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
async def wire():
    wire = AsyncWire()
    yield wire
    await wire.aclose()


@pytest.fixture
async def client(base_url, alice, wire, sleeps):
    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    http = httpx.AsyncClient(transport=wire)
    async with AsyncSignalClient(alice, base_url, http_client=http, sleep=no_wait) as client:
        yield client
    await http.aclose()


async def test_async_create_run_takes_seed_defaults_or_a_run_config(client):
    run = await client.create_run(base_model=TINY)
    assert isinstance(run, AsyncSignalRun) and run.base_model == TINY
    config = (await run.get_status())["config"]
    assert (config["lora_r"], config["lora_alpha"], config["optimizer"]) == (32, 64, "adamw_8bit")
    other = await client.create_run(RunConfig(base_model=TINY, lora_r=4, optimizer="sgd", seed=2))
    kept = (await client.get_status(other.run_id))["config"]
    assert (kept["lora_r"], kept["optimizer"], kept["seed"]) == (4, "sgd", 2)


async def test_async_run_trains_accumulates_samples_and_saves(client):
    run = await client.create_run(base_model=TINY, lora_r=4, seed=6)
    mixed = [TEXT, CHAT, TrainingExample(text="Zorbia is far.")]
    result = await run.forward_backward(batch=mixed)
    assert result["step"] == 1 and result["loss"] > 0
    alone = (await run.forward_backward([TEXT]))["grad_norm"]
    summed = (await run.forward_backward([TEXT], accumulate=True))["grad_norm"]
    assert summed == pytest.approx(2 * alone, rel=1e-4)
    step = await run.optim_step(learning_rate=1e-2)
    assert (step["step"], step["learning_rate"]) == (1, 1e-2)
    sampled = await run.sample(["The capital", "Hello"], return_logprobs=True, **GREEDY)
    assert {"outputs", "logprobs", "finish_reasons"} <= set(sampled)
    assert len(sampled["outputs"]) == len(sampled["logprobs"]) == 2
    saved = await run.save_state(mode="adapter")
    assert (saved["step"], saved["mode"]) == (1, "adapter")
    assert saved["artifact_uri"].startswith("http://127.0.0.1")  # the archive's URL
    assert [row["step"] for row in await run.get_metrics()] == [1]
    assert (await run.get_status())["step"] == 1
    assert TINY in await client.list_models()
    assert run.run_id in [r["run_id"] for r in await client.list_runs()]


async def test_async_training_client_epochs_over_sync_and_async_iterables(client, capsys):
    run = await client.create_run(base_model=TINY, lora_r=4)

    async def batches():
        for batch in ([TEXT], [CHAT]):
            yield batch

    async with client.training(run.run_id) as training:
        assert isinstance(training, AsyncTrainingClient)
        summary = await training.train_epoch(batches(), progress=True)
        assert (summary["steps"], set(summary)) == (2, {"avg_loss", "steps", "tokens", "seconds"})
        summary = await training.train_epoch([[TEXT]], progress=True)
        assert summary["steps"] == 1 and summary["tokens"] > 0
        assert "1/1" in capsys.readouterr().err
        one = await training.train_batch([TEXT], learning_rate=1e-2)
        assert (one["step"], one["learning_rate"]) == (4, 1e-2)
        metrics = await training.get_metrics()
        assert metrics["current_step"] == 4 and len(metrics["loss_history"]) == 4
        assert (await training.save_checkpoint())["step"] == 4
    assert not client._transport.http_client.is_closed


async def test_a_standalone_async_training_client_reads_metrics_that_survive_it(client, base_url):
    run = await client.create_run(base_model=TINY, lora_r=4)
    async with AsyncTrainingClient(
        run_id=run.run_id, api_key=client.api_key, base_url=client.base_url
    ) as training:
        losses = [(await training.train_batch([TEXT]))["loss"] for _ in range(2)]
        pool = training._transport.http_client
    assert pool.is_closed
    fresh = await AsyncTrainingClient(run.run_id, client.api_key, base_url).get_metrics()
    assert fresh["current_step"] == 2 and fresh["avg_loss"] == pytest.approx(sum(losses) / 2)


async def test_async_batch_sample_sends_chunks_concurrently_and_keeps_input_order(client, wire):
    run = await client.create_run(base_model=TINY, lora_r=4, seed=8)
    prompts = ["The capital", "Hello", "Zorbia is", "Once upon", "A B C"]
    one_by_one = [(await run.sample([p], **GREEDY))["outputs"][0] for p in prompts]
    inference = run.inference(batch_size=2)
    assert isinstance(inference, AsyncInferenceClient)
    before, wire.peak = len(wire.posts("/sample")), 0
    assert await inference.batch_sample(prompts, **GREEDY) == one_by_one
    assert len(wire.posts("/sample")) == before + 3 and wire.peak > 1


async def test_async_cache_step_stream_and_embeddings(client, wire):
    run = await client.create_run(base_model=TINY, lora_r=4, seed=9)
    await run.forward_backward([TEXT])
    await run.optim_step(learning_rate=0.05)
    inference = client.inference(run.run_id, step=1)
    inference.enable_cache()
    first = await inference.sample(["same"], max_tokens=4)
    assert await inference.sample(["same"], max_tokens=4) == first
    assert len(wire.posts("/sample")) == 1 and inference.get_cache_stats()["hits"] == 1
    events = [e async for e in inference.stream_sample("Hello", max_tokens=4, temperature=0)]
    assert events[-1]["finish_reason"] in {"stop", "length"} and "text" in events[0]
    at_0, at_1 = client.inference(run.run_id, step=0), inference
    assert await at_0.embeddings(["Zorbia"]) != await at_1.embeddings(["Zorbia"])
    with pytest.raises(NotFoundError, match="kept steps"):
        await client.inference(run.run_id, step=7).sample(["x"])


async def test_async_errors_map_to_the_same_exceptions(client, base_url, bob, sleeps):
    with pytest.raises(NotFoundError) as caught:
        await client.create_run(base_model="meta-llama/Llama-3.2-3B")
    assert TINY in caught.value.message and caught.value.status_code == 404
    with pytest.raises(ValidationError, match="valid: q_proj") as bad:
        await client.create_run(base_model=TINY, lora_target_modules=["qq"])
    assert bad.value.status_code == 400 and bad.value.request_id
    run = await client.create_run(base_model=TINY, lora_r=4)
    async with AsyncSignalClient(bob, base_url) as other:
        with pytest.raises(NotFoundError, match="no run") as theirs:
            await other.forward_backward(run.run_id, [TEXT])
    assert theirs.value.request_id and sleeps == []


async def test_an_async_optim_step_whose_answer_was_lost_is_applied_once(client, wire, sleeps):
    run = await client.create_run(base_model=TINY, lora_r=4)
    await run.forward_backward([TEXT])
    wire.lose_next("/optim_step")
    assert (await run.optim_step())["step"] == 1
    attempts = wire.posts("/optim_step")
    assert len(attempts) == 2 and len(sleeps) == 1
    assert len({r.headers["idempotency-key"] for r in attempts}) == 1
    assert (await run.get_status())["step"] == 1


async def test_over_the_tenants_in_flight_limit_the_server_answers_429_with_retry_after(
    one_torch_thread, tmp_path
):
    key = make_key(tmp_path, "erin")
    live = LiveServer(server_settings(tmp_path, max_queued_per_tenant=1)).start()
    sleeps: list[float] = []

    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    try:
        wait_ready(live.base_url)
        async with AsyncSignalClient(key, live.base_url, max_retries=1, sleep=no_wait) as client:
            run = await client.create_run(base_model=TINY, lora_r=4)
            big = [{"text": "Zorbia " * 200}] * 4  # about a second of work on one thread
            long = asyncio.create_task(run.forward_backward(big))
            await asyncio.sleep(0.1)  # bounded: the big batch is now in flight
            with pytest.raises(RateLimitError) as caught:
                await run.forward_backward([TEXT])
            assert (await long)["step"] == 1
        assert caught.value.status_code == 429 and caught.value.retry_after == 1.0
        assert sleeps == [1.0]  # Retry-After honoured, once (max_retries=1)
    finally:
        live.stop()
