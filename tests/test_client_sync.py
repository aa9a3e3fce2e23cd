"""The sync SDK over `httpx.MockTransport`: retries, idempotency, errors, the three API levels."""

from __future__ import annotations

import httpx
import pytest

from fake_signal import MODELS, FakeSignal, error
from frontier_signal import (
    APIConnectionError,
    APITimeoutError,
    InferenceClient,
    NotFoundError,
    RateLimitError,
    RunConfig,
    ServerError,
    SignalClient,
    SignalRun,
    TrainingClient,
    TrainingExample,
    ValidationError,
)

BASE = "http://signal.test"
FB_PATH = "/v1/runs/run_0000/forward_backward"


@pytest.fixture
def server():
    return FakeSignal()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(server, sleeps):
    http = httpx.Client(transport=server.transport())
    with SignalClient("sk-test", BASE, http_client=http, sleep=sleeps.append) as client:
        yield client
    http.close()


@pytest.fixture
def run(client) -> SignalRun:
    return client.create_run(base_model=MODELS[0], lora_r=8)


def test_a_429_is_retried_after_the_retry_after_seconds_without_real_waiting(
    client, run, server, sleeps
):
    server.fail_next(FB_PATH, error(429, "busy", **{"retry-after": "2"}), error(429, "busy"))
    result = run.forward_backward([{"text": "hello"}])
    assert result["loss"] == 2.0
    assert sleeps[0] == 2.0 and 0.375 <= sleeps[1] <= 1.0  # Retry-After, then backoff
    assert len(server.posts(FB_PATH)) == 3


def test_every_retry_of_a_post_carries_the_same_idempotency_key(client, run, server):
    server.fail_next(FB_PATH, error(503, "down"), httpx.ConnectError("refused"))
    run.forward_backward([{"text": "hello"}])
    keys = [r.headers["idempotency-key"] for r in server.posts(FB_PATH)]
    assert len(keys) == 3 and len(set(keys)) == 1
    run.forward_backward([{"text": "again"}])
    assert server.posts(FB_PATH)[-1].headers["idempotency-key"] != keys[0]


def test_a_400_is_not_retried_and_raises_validation_error_with_the_servers_message(
    client, run, server, sleeps
):
    server.fail_next(FB_PATH, error(400, "batch[0].messages needs an assistant turn", "req_7"))
    with pytest.raises(ValidationError) as caught:
        run.forward_backward([{"text": "x"}])
    assert caught.value.message == "batch[0].messages needs an assistant turn"
    assert (caught.value.status_code, caught.value.request_id) == (400, "req_7")
    assert len(server.posts(FB_PATH)) == 1 and sleeps == []


def test_retries_stop_after_max_retries_with_the_last_error(server, sleeps):
    http = httpx.Client(transport=server.transport())
    client = SignalClient("sk-test", BASE, max_retries=2, http_client=http, sleep=sleeps.append)
    server.fail_next("/v1/base-models", *[error(429, "busy", **{"retry-after": "1"})] * 3)
    with pytest.raises(RateLimitError) as caught:
        client.list_models()
    assert caught.value.retry_after == 1.0 and sleeps == [1.0, 1.0]


def test_no_answer_raises_connection_or_timeout_errors_after_retrying(client, server, sleeps):
    server.fail_next("/v1/base-models", *[httpx.ConnectError("refused")] * 4)
    with pytest.raises(APIConnectionError, match="could not reach"):
        client.list_models()
    assert len(sleeps) == 3
    server.fail_next("/v1/base-models", *[httpx.ReadTimeout("slow")] * 4)
    with pytest.raises(APITimeoutError):
        client.list_models()


def test_requests_carry_the_bearer_key_and_the_client_timeout(client, server):
    client.list_models()
    request = server.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.extensions["timeout"]["read"] == 300
    assert "idempotency-key" not in request.headers  # only POSTs carry one


def test_list_models_returns_ids_and_list_runs_returns_status_dicts(client, run):
    assert client.list_models() == MODELS
    assert [r["run_id"] for r in client.list_runs()] == [run.run_id]


def test_create_run_sends_every_config_field_and_accepts_a_run_config(client, server):
    run = client.create_run(base_model=MODELS[0], lora_r=8, optimizer="sgd")
    sent = server.runs[run.run_id]["config"]
    assert (sent["lora_r"], sent["optimizer"], sent["lora_alpha"]) == (8, "sgd", 64)
    other = client.create_run(RunConfig(base_model=MODELS[1], seed=3))
    assert server.runs[other.run_id]["config"]["seed"] == 3
    assert other.base_model == MODELS[1]


def test_an_unknown_base_model_is_a_not_found_error(client):
    with pytest.raises(NotFoundError, match="unknown base model"):
        client.create_run(base_model="meta-llama/Llama-3.2-3B")


def test_the_simple_api_and_run_methods_reach_the_same_endpoints(client, run, server):
    batch = [{"text": "a"}, TrainingExample(text="b")]
    assert client.forward_backward(run.run_id, batch)["tokens"] == 20
    assert server.posts(FB_PATH)[-1].read() == (
        b'{"batch":[{"text":"a"},{"text":"b"}],"accumulate":false}'
    )
    assert client.optim_step(run.run_id, learning_rate=1e-3) == {
        "step": 1,
        "learning_rate": 1e-3,
        "grad_norm": 0.5,
        "metrics": {},
    }
    sampled = run.sample(["The meaning of life is"], temperature=0.0)
    assert sampled["outputs"][0].startswith("The meaning of life is")
    assert run.save_state(mode="adapter")["checkpoint_path"].endswith("ckpt_0001")
    assert run.get_status()["step"] == 1
    assert [row["step"] for row in run.get_metrics()] == [1]
    assert client.get_run(run.run_id).run_id == run.run_id


def test_bad_arguments_fail_locally_without_a_request(client, run, server):
    sent = len(server.requests)
    with pytest.raises(ValidationError):
        run.forward_backward([])
    with pytest.raises(ValidationError):
        run.sample([])
    with pytest.raises(ValidationError):
        run.save_state(mode="everything")
    assert len(server.requests) == sent


def test_training_client_train_epoch_and_metrics(client, run, server):
    ticks = iter([100.0, 104.5])
    training = TrainingClient(
        run.run_id,
        "sk-test",
        BASE,
        http_client=client._transport.http_client,
        clock=lambda: next(ticks),
    )
    assert training.timeout == 3600
    batches = ([{"text": f"example {i}"}] for i in range(3))  # no len(): bar has no total
    summary = training.train_epoch(batches, progress=False)
    assert summary == {
        "avg_loss": (2.0 + 1.0 + 2 / 3) / 3,
        "steps": 3,
        "tokens": 30,
        "seconds": 4.5,
    }
    step = training.train_batch([{"text": "more"}], learning_rate=1e-2)
    assert (step["step"], step["learning_rate"], step["loss"]) == (4, 1e-2, 0.5)
    metrics = training.get_metrics()
    assert metrics["current_step"] == 4
    assert metrics["loss_history"] == [2.0, 1.0, 2 / 3, 0.5]
    assert metrics["grad_norms"] == [0.5] * 4
    assert metrics["avg_loss"] == pytest.approx((2.0 + 1.0 + 2 / 3 + 0.5) / 4)


def test_a_fresh_training_client_reports_the_servers_average_loss(client, run):
    with client.training(run.run_id) as first:
        first.train_batch([{"text": "a"}])
        first.train_batch([{"text": "b"}])
    assert client.training(run.run_id).get_metrics()["avg_loss"] == 1.5


def test_closing_a_derived_client_leaves_the_parents_pool_open(client, run):
    with client.training(run.run_id) as training:
        training.forward_backward([{"text": "a"}])
    with run.inference() as inference:
        inference.sample(["p"])
    assert not client._transport.http_client.is_closed
    assert client.list_models() == MODELS


def test_a_standalone_client_closes_its_own_pool(monkeypatch):
    monkeypatch.setenv("FRONTIER_SIGNAL_API_KEY", "sk-env")
    with TrainingClient("run_0000") as training:
        pool = training._transport.http_client
    assert pool.is_closed and training.api_key == "sk-env"


def test_batch_sample_chunks_by_batch_size_and_keeps_input_order(client, run, server):
    inference = client.inference(run.run_id, step=0, batch_size=3)
    prompts = [f"p{i}" for i in range(7)]
    outputs = inference.batch_sample(prompts, max_tokens=5)
    assert [o.split(" -> ")[0] for o in outputs] == prompts
    sent = [r for r in server.posts(f"/v1/runs/{run.run_id}/sample")]
    assert [len(httpx.Response(200, content=r.content).json()["prompts"]) for r in sent] == [
        3,
        3,
        1,
    ]
    assert httpx.Response(200, content=sent[0].content).json()["step"] == 0
    assert len(inference.batch_sample(prompts, batch_size=4)) == 7
    assert inference.timeout == 30


def test_the_cache_answers_repeats_without_a_request(client, run, server):
    inference = client.inference(run.run_id)
    inference.enable_cache()
    first = inference.sample(["Same prompt", "Other"], max_tokens=50)
    again = inference.sample(["Same prompt"], max_tokens=50)
    assert again == first[:1]
    assert len(server.posts(f"/v1/runs/{run.run_id}/sample")) == 1
    assert inference.get_cache_stats() == {
        "cache_size": 2,
        "hits": 1,
        "misses": 2,
        "enabled": True,
    }
    assert inference.sample(["Same prompt"], max_tokens=51) != first[:1]  # other args: a miss
    inference.clear_cache()
    assert inference.get_cache_stats()["cache_size"] == 0


def test_without_the_cache_repeats_are_sampled_again(client, run):
    inference = client.inference(run.run_id)
    assert inference.sample(["p"]) != inference.sample(["p"])
    assert inference.get_cache_stats()["enabled"] is False


def test_inference_retries_once_at_once_then_backs_off(client, run, server, sleeps):
    server.fail_next(f"/v1/runs/{run.run_id}/sample", error(503, "x"), error(503, "x"))
    assert len(run.inference().sample(["p"])) == 1
    assert sleeps[0] == 0.0 and 0.375 <= sleeps[1] <= 0.5


def test_stream_sample_yields_token_events_then_the_finish_event(client, run, server):
    server.stream_chunks = [b'data: {"text": "H', b'i", "token_id": 1, "logprob": -0.5}\n', b"\n"]
    server.stream_chunks += [
        b'data: {"finish_reason": "stop", "usage": {}}\n\ndata: [DO',
        b"NE]\n\n",
    ]
    events = list(run.inference().stream_sample("Hello", max_tokens=4))
    assert events == [
        {"text": "Hi", "token_id": 1, "logprob": -0.5},
        {"finish_reason": "stop", "usage": {}},
    ]
    request = server.posts(f"/v1/runs/{run.run_id}/sample/stream")[-1]
    assert request.headers["accept"] == "text/event-stream"


def test_an_error_event_mid_stream_raises(client, run, server):
    server.stream_chunks = [b'data: {"text": "a"}\n\ndata: {"error": {"message": "oom"}}\n\n']
    stream = run.inference().stream_sample("Hello")
    assert next(stream) == {"text": "a"}
    with pytest.raises(ServerError, match="oom"):
        next(stream)


def test_embeddings_return_one_vector_per_text(client, run):
    assert run.inference().embeddings(["ab", "abc"]) == [[2.0, 1.0], [3.0, 1.0]]


def test_inference_client_can_be_built_standalone_with_the_seed_defaults():
    with InferenceClient("run_1", api_key="sk-x") as inference:
        assert (inference.step, inference.batch_size, inference.timeout) == (None, 8, 30)
        assert inference.max_retries == 3
