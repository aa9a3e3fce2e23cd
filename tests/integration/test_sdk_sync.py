"""The sync SDK against a live server: the three API levels, errors, idempotency, durability."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from frontier_signal import (
    AuthenticationError,
    InferenceClient,
    NotFoundError,
    RateLimitError,
    RunConfig,
    ServerError,
    SignalClient,
    TrainingClient,
    TrainingExample,
    ValidationError,
)
from tests.conftest import TINY
from tests.integration import sdk_fixtures
from tests.integration.conftest import make_key, server_settings
from tests.integration.sdk_fixtures import Wire, wait_ready
from tests.live_server import LiveServer

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

TEXT = {"text": "The capital of Zorbia is Quellmar."}
CHAT = {
    "messages": [
        {"role": "user", "content": "What is the capital of Zorbia?"},
        {"role": "assistant", "content": "Quellmar."},
    ]
}
GREEDY = {"max_tokens": 4, "temperature": 0.0}


@pytest.fixture
def wire():
    wire = Wire()
    yield wire
    wire.close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(base_url, alice, wire, sleeps):
    http = httpx.Client(transport=wire)
    with SignalClient(alice, base_url, http_client=http, sleep=sleeps.append) as client:
        yield client
    http.close()


@pytest.fixture
def run(client):
    return client.create_run(base_model=TINY, lora_r=4, seed=5)


def test_a_run_created_with_the_seed_defaults_reports_them_in_its_status(client):
    run = client.create_run(base_model=TINY)
    status = run.get_status()
    assert status["run_id"] == run.run_id and status["step"] == 0
    assert run.base_model == TINY and status["status"] == "active"
    config = status["config"]
    assert (config["lora_r"], config["lora_alpha"], config["lora_dropout"]) == (32, 64, 0.0)
    assert (config["optimizer"], config["learning_rate"], config["weight_decay"]) == (
        "adamw_8bit",
        3e-4,
        0.01,
    )
    assert (config["max_seq_length"], config["bf16"], config["gradient_checkpointing"]) == (
        2048,
        True,
        True,
    )
    assert config["lora_target_modules"] is None
    assert status["effective"]["dtype"].startswith("float32 (")  # bf16 asked, fp32 ran: said


def test_a_run_config_is_sent_whole_and_the_server_keeps_its_fields(client):
    config = RunConfig(
        base_model=TINY, lora_r=4, lora_target_modules=["q_proj", "v_proj"], optimizer="sgd", seed=3
    )
    run = client.create_run(config)
    kept = client.get_status(run.run_id)["config"]
    assert (kept["lora_r"], kept["optimizer"], kept["seed"]) == (4, "sgd", 3)
    assert kept["lora_target_modules"] == ["q_proj", "v_proj"]
    assert client.get_run(run.run_id).base_model == TINY


def test_forward_backward_takes_text_chat_and_training_examples_alike(client, run):
    batch = [TEXT, CHAT, TrainingExample(text="Zorbia is far."), TrainingExample(**CHAT)]
    result = run.forward_backward(batch=batch)
    assert {"loss", "step", "grad_norm", "grad_stats", "tokens"} <= set(result)
    assert result["step"] == 1 and result["loss"] > 0 and result["grad_norm"] > 0
    assert set(result["grad_stats"]) == {"max_abs", "num_params", "nonfinite"}
    simple = client.forward_backward(run.run_id, [TrainingExample(**CHAT)])
    assert simple["step"] == 1 and simple["tokens"] < result["tokens"]


def test_accumulate_adds_to_the_pending_gradient_and_the_default_clears_it(run):
    alone = run.forward_backward([TEXT])["grad_norm"]
    cleared = run.forward_backward([TEXT], accumulate=False)["grad_norm"]
    summed = run.forward_backward([TEXT], accumulate=True)["grad_norm"]
    assert cleared == pytest.approx(alone, rel=1e-5)
    assert summed == pytest.approx(2 * alone, rel=1e-4)


def test_optim_step_overrides_the_learning_rate_for_that_step_only(client, run):
    loss = run.forward_backward([TEXT])["loss"]
    first = run.optim_step(learning_rate=1e-2)
    assert (first["step"], first["learning_rate"]) == (1, 1e-2)
    assert first["metrics"]["loss"] == pytest.approx(loss) and first["grad_norm"] > 0
    run.forward_backward([TEXT])
    assert client.optim_step(run.run_id)["learning_rate"] == 3e-4  # the run's own again
    rows = run.get_metrics()
    assert [(row["step"], row["learning_rate"]) for row in rows] == [(1, 1e-2), (2, 3e-4)]
    assert set(rows[0]) >= {"step", "loss", "grad_norm", "learning_rate", "tokens", "time"}
    assert run.get_status()["step"] == 2


def test_sample_answers_outputs_logprobs_and_finish_reasons_per_prompt(client, run):
    result = run.sample(["The capital", "Hello"], return_logprobs=True, **GREEDY)
    assert {"outputs", "logprobs", "finish_reasons"} <= set(result)
    assert len(result["outputs"]) == len(result["logprobs"]) == len(result["finish_reasons"]) == 2
    for logprobs, reason in zip(result["logprobs"], result["finish_reasons"], strict=True):
        assert all(lp <= 0 for lp in logprobs) and reason in {"stop", "length"}
        assert len(logprobs) == 4 if reason == "length" else len(logprobs) <= 4
    plain = client.sample(run.run_id, ["The capital", "Hello"], **GREEDY)
    assert plain["logprobs"] is None and plain["outputs"] == result["outputs"]


def test_min_p_and_logit_bias_reach_the_sampler(client, run, tiny_tokenizer):
    [token] = tiny_tokenizer(" banana", add_special_tokens=False)["input_ids"]
    forced = run.sample(["I like"], logit_bias={token: 100}, **GREEDY)
    assert forced["outputs"] == [" banana" * 4]
    greedy = run.sample(["I like"], **GREEDY)["outputs"]
    assert run.sample(["I like"], max_tokens=4, temperature=2.0, min_p=1.0)["outputs"] == greedy
    with pytest.raises(ValidationError, match="logit_bias"):
        run.sample(["I like"], logit_bias={token: 500}, **GREEDY)
    with pytest.raises(ValidationError, match="min_p"):
        run.sample(["I like"], min_p=3, **GREEDY)


def test_save_state_answers_the_documented_shape_and_records_a_checkpoint(client, run):
    run.forward_backward([TEXT])
    run.optim_step()
    saved = run.save_state(mode="adapter", push_to_hub=False)
    assert set(saved) == {
        "checkpoint_id",
        "checkpoint_path",
        "artifact_uri",
        "mode",
        "step",
        "pushed_to_hub",
        "hub_model_id",
        "files",
    }
    assert (saved["mode"], saved["step"], saved["pushed_to_hub"]) == ("adapter", 1, False)
    assert saved["files"]["adapter_model.safetensors"] > 0
    assert saved["artifact_uri"].startswith("file://")
    assert (Path(saved["checkpoint_path"]) / "adapter_config.json").exists()
    listed = client.list_checkpoints(run.run_id)
    assert saved["checkpoint_id"] in [c["checkpoint_id"] for c in listed]


def test_a_hub_push_that_cannot_reach_the_hub_names_the_local_save_and_is_not_retried(
    client, run, wire, sleeps
):
    with pytest.raises(ValidationError, match="hub_model_id"):
        run.save_state(push_to_hub=True)  # refused locally
    with pytest.raises(ServerError, match="saved locally at") as caught:
        run.save_state(mode="adapter", push_to_hub=True, hub_model_id="me/model")
    assert caught.value.status_code == 502 and caught.value.request_id
    assert len(wire.posts("/save_state")) == 1 and sleeps == []


def test_list_models_names_the_servers_models_and_list_runs_only_this_tenants(
    client, run, base_url, bob
):
    assert TINY in client.list_models()
    assert run.run_id in [r["run_id"] for r in client.list_runs()]
    with SignalClient(bob, base_url) as other:
        assert run.run_id not in [r["run_id"] for r in other.list_runs()]


def test_training_client_trains_batches_and_an_epoch_with_a_progress_bar(client, run, capsys):
    training = client.training(run_id=run.run_id, timeout=7200, max_retries=3)
    assert (training.timeout, training.max_retries) == (7200, 3)
    one = training.train_batch(batch_data=[TEXT], learning_rate=1e-2)
    assert (one["step"], one["learning_rate"]) == (1, 1e-2) and one["loss"] > 0
    dataloader = [[TEXT], [CHAT], [TEXT, CHAT]]
    epoch = training.train_epoch(dataloader=dataloader, progress=True)
    assert set(epoch) == {"avg_loss", "steps", "tokens", "seconds"}
    assert epoch["steps"] == 3 and epoch["tokens"] > 0 and epoch["seconds"] >= 0
    assert "3/3" in capsys.readouterr().err  # the tqdm bar, sized by len(dataloader)
    metrics = training.get_metrics()
    assert metrics["current_step"] == 4
    assert len(metrics["loss_history"]) == len(metrics["grad_norms"]) == 4
    assert metrics["avg_loss"] == pytest.approx((one["loss"] + 3 * epoch["avg_loss"]) / 4)
    saved = training.save_checkpoint(mode="adapter")
    assert saved["step"] == 4


def test_training_metrics_come_from_the_server_so_a_fresh_client_sees_them(client, run, base_url):
    with client.training(run.run_id) as training:
        losses = [training.train_batch([TEXT])["loss"] for _ in range(2)]
    assert not client._transport.http_client.is_closed  # the borrowed pool stays open
    with TrainingClient(run.run_id, api_key=client.api_key, base_url=base_url) as fresh:
        metrics = fresh.get_metrics()
        pool = fresh._transport.http_client
    assert pool.is_closed  # a standalone client closes its own pool
    assert metrics["current_step"] == 2
    assert metrics["loss_history"] == pytest.approx(losses)
    assert metrics["avg_loss"] == pytest.approx(sum(losses) / 2)


def test_batch_sample_chunks_by_batch_size_and_keeps_input_order(client, run, wire):
    prompts = ["The capital", "Hello", "Zorbia is", "Once upon", "A B C"]
    one_by_one = [run.sample([p], **GREEDY)["outputs"][0] for p in prompts]
    inference = client.inference(run_id=run.run_id, batch_size=2, timeout=30)
    before = len(wire.posts("/sample"))
    assert inference.batch_sample(prompts=prompts, **GREEDY) == one_by_one
    sent = [
        len(httpx.Response(200, content=r.content).json()["prompts"]) for r in wire.posts("/sample")
    ]
    assert sent[before:] == [2, 2, 1]
    assert inference.batch_sample(prompts, batch_size=5, **GREEDY) == one_by_one
    assert len(wire.posts("/sample")) == before + 4
    assert inference.sample(prompts[:1], **GREEDY) == one_by_one[:1]


def test_the_cache_answers_a_repeated_prompt_without_a_request(client, run, wire):
    inference = client.inference(run.run_id)
    inference.enable_cache()
    first = inference.sample(["What is the capital of France?"], max_tokens=6)
    again = inference.sample(["What is the capital of France?"], max_tokens=6)
    assert again == first and len(wire.posts("/sample")) == 1
    assert inference.get_cache_stats() == {"cache_size": 1, "hits": 1, "misses": 1, "enabled": True}
    inference.clear_cache()
    assert inference.get_cache_stats()["cache_size"] == 0


def test_inference_at_step_n_uses_those_weights_and_an_unkept_step_is_not_found(client, run):
    for _ in range(3):
        run.forward_backward([TEXT])
        run.optim_step(learning_rate=0.05)
    at_0, at_3 = client.inference(run.run_id, step=0), run.inference(step=3)
    now = client.inference(run.run_id)
    assert at_3.sample(["The capital"], **GREEDY) == now.sample(["The capital"], **GREEDY)
    assert at_0.embeddings(["Zorbia"]) != at_3.embeddings(["Zorbia"])
    with pytest.raises(NotFoundError) as caught:
        client.inference(run.run_id, step=9).sample(["The capital"])
    assert "kept steps: [0, 1, 2, 3]" in caught.value.message
    assert caught.value.status_code == 404 and caught.value.request_id


def test_stream_sample_yields_the_tokens_of_sample_then_a_finish_event(run):
    options = {"max_tokens": 5, "temperature": 0.0, "seed": 1}
    events = list(run.inference().stream_sample("Hello", **options))
    tokens, final = events[:-1], events[-1]
    assert all(set(e) == {"text", "token_id", "logprob"} for e in tokens)
    assert final["finish_reason"] in {"stop", "length"}
    assert final["usage"]["completion_tokens"] == len(tokens)
    assert "".join(e["text"] for e in events) == run.sample(["Hello"], **options)["outputs"][0]


def test_embeddings_are_one_unit_vector_per_text(run):
    vectors = run.inference().embeddings(["Zorbia", "Quellmar is a city"])
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 0
    for vector in vectors:
        assert sum(x * x for x in vector) == pytest.approx(1.0, rel=1e-4)


def test_derived_clients_share_the_parents_pool_and_leave_it_open(client, run):
    pool = client._transport.http_client
    with client.training(run.run_id) as training, run.inference() as inference:
        assert training._transport.http_client is pool
        assert inference._transport.http_client is pool
        training.forward_backward([TEXT])
        inference.sample(["Hi"], max_tokens=2)
    assert not pool.is_closed and TINY in client.list_models()
    with InferenceClient(run.run_id, client.api_key, client.base_url) as standalone:
        assert (standalone.step, standalone.batch_size, standalone.timeout) == (None, 8, 30)
        assert len(standalone.sample(["Hi"], max_tokens=2)) == 1
        assert standalone._transport.http_client is not pool


def test_an_unknown_base_model_is_not_found_and_the_message_lists_the_models(client, sleeps):
    with pytest.raises(NotFoundError) as caught:
        client.create_run(base_model="meta-llama/Llama-3.2-3B")
    assert "Llama-3.2-3B" in caught.value.message and TINY in caught.value.message
    assert caught.value.status_code == 404 and caught.value.request_id and sleeps == []


def test_a_bad_config_is_a_validation_error_locally_or_from_the_server(client, wire):
    sent = len(wire.requests)
    with pytest.raises(ValidationError, match="lora_r") as local:
        client.create_run(base_model=TINY, lora_r=0)
    assert local.value.status_code is None and len(wire.requests) == sent
    with pytest.raises(ValidationError, match="valid: q_proj") as remote:
        client.create_run(base_model=TINY, lora_target_modules=["qq"])
    assert remote.value.status_code == 400 and remote.value.request_id


def test_bad_training_input_the_server_refuses_raises_validation_error(client):
    run = client.create_run(base_model=TINY, lora_r=4, max_seq_length=16)
    with pytest.raises(ValidationError, match="max_seq_length") as caught:
        run.forward_backward([{"text": "word " * 100}])
    assert caught.value.status_code == 400
    with pytest.raises(ValidationError, match="forward_backward first"):
        run.optim_step()


def test_another_tenants_run_is_not_found_through_every_api_level(client, run, base_url, bob):
    run.forward_backward([TEXT])
    run.optim_step()
    with SignalClient(bob, base_url) as other:
        calls = [
            lambda: other.get_run(run.run_id),
            lambda: other.forward_backward(run.run_id, [TEXT]),
            lambda: other.sample(run.run_id, ["Hi"]),
            lambda: other.training(run.run_id).get_metrics(),
            lambda: other.inference(run.run_id).embeddings(["Hi"]),
        ]
        for call in calls:
            with pytest.raises(NotFoundError, match="no run") as caught:
                call()
            assert caught.value.status_code == 404 and caught.value.request_id
    assert run.get_status()["step"] == 1  # untouched


def test_a_wrong_key_is_an_authentication_error(base_url):
    stranger = SignalClient("sk-fs-not-a-key", base_url)
    with stranger, pytest.raises(AuthenticationError, match="invalid API key") as caught:
        stranger.list_runs()
    assert caught.value.status_code == 401


def test_an_optim_step_whose_answer_was_lost_is_retried_and_applied_once(client, run, wire, sleeps):
    run.forward_backward([TEXT])
    wire.lose_next("/optim_step")  # the server steps, then the connection drops
    result = run.optim_step(learning_rate=1e-2)
    attempts = wire.posts("/optim_step")
    assert len(attempts) == 2 and len(sleeps) == 1
    assert attempts[0].headers["idempotency-key"] == attempts[1].headers["idempotency-key"]
    assert result["step"] == 1 and run.get_status()["step"] == 1
    assert [row["step"] for row in run.get_metrics()] == [1]


@pytest.fixture
def lone_data_dir(tmp_path):
    return tmp_path / "restartable"


def test_training_metrics_survive_a_server_restart(one_torch_thread, lone_data_dir):
    key = make_key(lone_data_dir, "carol")
    settings = server_settings(lone_data_dir)
    live = LiveServer(settings).start()
    try:
        wait_ready(live.base_url)
        with SignalClient(key, live.base_url) as client:
            run = client.create_run(base_model=TINY, lora_r=4)
            with client.training(run.run_id) as training:
                losses = [training.train_batch([TEXT])["loss"] for _ in range(2)]
    finally:
        live.stop()
    again = LiveServer(settings).start()
    try:
        wait_ready(again.base_url)
        with TrainingClient(run.run_id, key, again.base_url) as training:
            metrics = training.get_metrics()
        assert metrics["current_step"] == 2 and metrics["loss_history"] == pytest.approx(losses)
    finally:
        again.stop()


def test_a_tenant_over_its_run_limit_gets_a_rate_limit_error(one_torch_thread, tmp_path):
    key = make_key(tmp_path, "dave")
    live = LiveServer(server_settings(tmp_path, max_runs_per_tenant=1)).start()
    sleeps: list[float] = []
    try:
        wait_ready(live.base_url)
        with SignalClient(key, live.base_url, max_retries=1, sleep=sleeps.append) as client:
            client.create_run(base_model=TINY, lora_r=4)
            with pytest.raises(RateLimitError) as caught:
                client.create_run(base_model=TINY, lora_r=4)
        assert caught.value.retry_after is not None and sleeps == [caught.value.retry_after]
    finally:
        live.stop()
