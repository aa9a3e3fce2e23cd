"""Checkpoints, paths, the RestClient and cross-face visibility, driven by the real hpcai SDK."""

from __future__ import annotations

import io
import tarfile

import httpx
import pytest

from tests.conftest import TINY
from tests.integration.tinker_support import LR, fact_datum, hpcai, loss_of, tokens_input, types


def train(training, datum, steps: int = 2) -> None:
    for _ in range(steps):
        training.forward_backward([datum], "cross_entropy")
        training.optim_step(LR)
    training.forward([datum], "cross_entropy").result()  # runs after (so waits for) the steps


def forward_loss(training, datum) -> float:
    return loss_of(training.forward([datum], "cross_entropy").result())


@pytest.fixture(scope="module")
def datum(tiny_tokenizer):
    return fact_datum(tiny_tokenizer)


def test_save_state_and_load_state_restore_the_weights(hpcai_client, datum):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=5)
    train(training, datum)
    saved = training.save_state("after-two").result()
    assert saved.path == f"hpcai://{training.model_id}/training/after-two"
    at_save = forward_loss(training, datum)
    train(training, datum)
    assert forward_loss(training, datum) != pytest.approx(at_save)
    training.load_state(saved.path).result()
    assert forward_loss(training, datum) == pytest.approx(at_save, rel=1e-5)
    # tinker:// and the weights spelling name the same checkpoint.
    train(training, datum, 1)
    training.load_state(f"tinker://{training.model_id}/weights/after-two").result()
    assert forward_loss(training, datum) == pytest.approx(at_save, rel=1e-5)


def test_a_duplicate_checkpoint_name_fails_with_a_message_not_a_retry(hpcai_client, datum):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4)
    training.save_state("same").result()
    with pytest.raises(ValueError, match="already has a training checkpoint named 'same'"):
        training.save_state("same").result()
    # The same name is allowed once per kind.
    assert training.save_weights_for_sampler("same").result().path.endswith("/sampler/same")


def test_create_training_client_from_state_takes_layout_and_weights_from_the_checkpoint(
    hpcai_client, datum
):
    source = hpcai_client.create_lora_training_client(
        base_model=TINY, rank=8, seed=6, train_mlp=True, train_unembed=True
    )
    train(source, datum)
    path = source.save_state("to-resume").result().path
    expected = forward_loss(source, datum)
    resumed = hpcai_client.create_training_client_from_state(path)
    assert resumed.model_id != source.model_id
    assert forward_loss(resumed, datum) == pytest.approx(expected, rel=1e-5)
    train(resumed, datum, 1)  # training goes on from there
    assert forward_loss(resumed, datum) < expected
    # A sampler checkpoint loads the weights only.
    sampler_path = source.save_weights_for_sampler("to-resume").result().path
    from_sampler = hpcai_client.create_training_client_from_state(sampler_path)
    assert forward_loss(from_sampler, datum) == pytest.approx(expected, rel=1e-5)
    train(from_sampler, datum, 1)
    assert forward_loss(from_sampler, datum) < expected


def test_create_training_client_with_a_model_id_continues_that_model(hpcai_client, datum):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=8)
    train(training, datum)
    again = hpcai_client.create_training_client(model_id=training.model_id)
    assert forward_loss(again, datum) == pytest.approx(forward_loss(training, datum))
    train(again, datum, 1)
    assert again.get_info().model_id == training.model_id


def test_unload_model_frees_the_model_and_a_later_call_resumes_it(hpcai_client, datum):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=9)
    train(training, datum)
    before = forward_loss(training, datum)
    unloaded = training.unload_model().result()
    assert unloaded.model_id == training.model_id
    resumed = hpcai_client.create_training_client(model_id=training.model_id)
    assert forward_loss(resumed, datum) == pytest.approx(before, rel=1e-5)


def test_the_rest_client_lists_gets_downloads_and_deletes(hpcai_client, datum):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=10)
    train(training, datum, 1)
    state = training.save_state("rest-state").result().path
    sampler = training.save_weights_for_sampler("rest-sampler").result().path
    rest = hpcai_client.create_rest_client()
    listed = rest.list_checkpoints(training.model_id).result().checkpoints
    assert [(c.checkpoint_type, c.checkpoint_path) for c in listed] == [
        ("training", state),
        ("sampler", sampler),
    ]
    run = rest.get_training_run(training.model_id).result()
    assert run.base_model == TINY and run.is_lora and run.lora_rank == 4
    assert run.last_checkpoint.checkpoint_path == state
    assert run.last_sampler_checkpoint.checkpoint_path == sampler
    assert (
        rest.get_training_run_by_checkpoint_path(sampler).result().training_run_id
        == run.training_run_id
    )
    runs = rest.list_training_runs(limit=2, offset=0).result()
    assert len(runs.training_runs) == 2 and runs.cursor.total_count >= 2
    assert runs.training_runs[0].training_run_id == training.model_id  # newest first
    archive = rest.download_checkpoint_archive(training.model_id, "rest-state").result()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = tar.getnames()
    assert any(name.endswith("adapter_model.safetensors") for name in names)
    gzipped = rest.download_checkpoint_archive_by_checkpoint_path(sampler).result()
    assert gzipped[:2] == b"\x1f\x8b"
    rest.delete_checkpoint(training.model_id, "rest-state").result()
    rest.delete_checkpoint_by_checkpoint_path(sampler).result()
    assert rest.list_checkpoints(training.model_id).result().checkpoints == []
    with pytest.raises(hpcai.NotFoundError):
        rest.delete_checkpoint(training.model_id, "rest-state").result()


def test_runs_are_shared_with_the_signal_api(server, alice, hpcai_client, tiny_tokenizer):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4)
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {alice}"}, timeout=60
    ) as http:
        signal_runs = {run["run_id"] for run in http.get("/v1/runs").json()["data"]}
        assert training.model_id in signal_runs
        made = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4}).json()["run_id"]
        step = http.post(f"/v1/runs/{made}/forward_backward", json={"batch": [{"text": "Zorbia."}]})
        assert step.status_code == 200, step.text
        http.post(f"/v1/runs/{made}/optim_step", json={})
        saved = http.post(f"/v1/runs/{made}/save_state", json={}).json()
        sampled = http.post(
            f"/v1/runs/{training.model_id}/sample", json={"prompts": ["Hi"], "max_tokens": 3}
        )
        assert sampled.status_code == 200, sampled.text
    rest = hpcai_client.create_rest_client()
    listed = rest.list_checkpoints(made).result().checkpoints
    assert [c.checkpoint_type for c in listed] == ["training"]
    assert listed[0].checkpoint_path == f"hpcai://{made}/training/adapter-step-{saved['step']}"
    sampler = hpcai_client.create_sampling_client(
        model_path=listed[0].checkpoint_path, base_model=TINY
    )
    prompt = tokens_input(tiny_tokenizer, "Hello")
    result = sampler.sample(prompt, 1, types.SamplingParams(max_tokens=3)).result()
    assert 1 <= len(result.sequences[0].tokens) <= 3
    signal_run = rest.get_training_run(made).result()
    assert signal_run.lora_rank == 4 and signal_run.model_owner


def test_a_repeated_idempotency_key_replays_the_original_future(server, alice, hpcai_client):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4)
    body = {
        "model_id": training.model_id,
        "forward_backward_input": {
            "loss_fn": "cross_entropy",
            "data": [
                {
                    "model_input": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
                    "loss_fn_inputs": {
                        "target_tokens": {"data": [2, 3, 4], "dtype": "int64", "shape": [3]}
                    },
                }
            ],
        },
    }
    headers = {"X-API-Key": alice, "X-Idempotency-Key": "session:0:1"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
        first = http.post("/api/v1/forward_backward", json=body).json()
        second = http.post("/api/v1/forward_backward", json=body).json()
        assert first["request_id"] == second["request_id"]
        assert isinstance(first["request_id"], str) and first["model_id"] == training.model_id
        step = {"model_id": training.model_id, "adam_params": {"learning_rate": 1e-3}}
        optim = http.post(
            "/api/v1/optim_step", json=step, headers={"X-Idempotency-Key": "session:0:2"}
        ).json()
        for _ in range(100):
            result = http.post("/api/v1/retrieve_future", json={"request_id": optim["request_id"]})
            if result.json().get("type") != "try_again":
                break
        assert result.status_code == 200 and result.json()["metrics"]["step"] == 1.0
        unknown = http.post("/api/v1/retrieve_future", json={"request_id": "fut_nope"})
        assert unknown.status_code == 404
        # An optimizer step with nothing accumulated fails with a message, as a 400.
        reused = http.post("/api/v1/optim_step", json=step)  # the key of a forward_backward
        assert reused.status_code == 400 and "already used" in reused.text
        again = http.post(
            "/api/v1/optim_step", json=step, headers={"X-Idempotency-Key": "session:0:3"}
        ).json()
        failed = http.post("/api/v1/retrieve_future", json={"request_id": again["request_id"]})
        assert failed.status_code == 400 and "nothing to apply" in failed.json()["detail"]
