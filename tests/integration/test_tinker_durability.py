"""Tinker-face runs, checkpoints and finished futures survive a clean restart of the server."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TINY
from tests.integration.conftest import make_key, server_settings
from tests.integration.tinker_support import LR, fact_datum, hpcai, loss_of
from tests.live_server import LiveServer


def forward_loss(training, datum) -> float:
    return loss_of(training.forward([datum], "cross_entropy").result())


def test_a_restart_keeps_models_checkpoints_and_finished_futures(tmp_path, tiny_tokenizer):
    key = make_key(tmp_path, "alice")
    datum = fact_datum(tiny_tokenizer)
    live = LiveServer(server_settings(tmp_path, checkpoint_every=0)).start()
    live.wait_ready()
    service = hpcai.ServiceClient(base_url=live.base_url, api_key=key)
    training = service.create_lora_training_client(base_model=TINY, rank=4, seed=3)
    for _ in range(2):
        training.forward_backward([datum], "cross_entropy")
        training.optim_step(LR)
    saved = training.save_state("before-restart").result().path
    training.forward_backward([datum], "cross_entropy")
    training.optim_step(LR).result()
    expected = forward_loss(training, datum)
    with httpx.Client(base_url=live.base_url, headers={"X-API-Key": key}, timeout=60) as http:
        body = {"model_id": training.model_id, "path": "probe"}
        future = http.post("/api/v1/save_weights_for_sampler", json=body).json()["request_id"]
        first = http.post("/api/v1/retrieve_future", json={"request_id": future}, timeout=60)
        assert first.status_code == 200 and first.json()["path"].endswith("/sampler/probe")
    live.stop()  # clean shutdown: a training checkpoint of every run that moved

    live = LiveServer(server_settings(tmp_path)).start()
    try:
        live.wait_ready()
        service = hpcai.ServiceClient(base_url=live.base_url, api_key=key)
        with httpx.Client(base_url=live.base_url, headers={"X-API-Key": key}, timeout=60) as http:
            again = http.post("/api/v1/retrieve_future", json={"request_id": future})
            assert again.json() == first.json()
        resumed = service.create_training_client(model_id=training.model_id)
        assert forward_loss(resumed, datum) == pytest.approx(expected, rel=1e-5)
        rest = service.create_rest_client()
        paths = [
            c.checkpoint_path for c in rest.list_checkpoints(training.model_id).result().checkpoints
        ]
        assert saved in paths and f"hpcai://{training.model_id}/sampler/probe" in paths
        resumed.load_state(saved).result()
        resumed.forward_backward([datum], "cross_entropy")
        resumed.optim_step(LR).result()
    finally:
        live.stop()


def test_after_load_state_of_an_earlier_step_a_restart_resumes_the_loaded_line(
    tmp_path, tiny_tokenizer
):
    key = make_key(tmp_path, "alice")
    datum = fact_datum(tiny_tokenizer)
    live = LiveServer(server_settings(tmp_path, checkpoint_every=0)).start()
    live.wait_ready()
    service = hpcai.ServiceClient(base_url=live.base_url, api_key=key)
    training = service.create_lora_training_client(base_model=TINY, rank=4, seed=4)

    def train(steps: int) -> None:
        for _ in range(steps):
            training.forward_backward([datum], "cross_entropy")
            training.optim_step(LR)

    train(2)
    early = training.save_state("step-2").result().path
    train(2)
    training.save_state("step-4").result()
    training.load_state(early).result()
    train(1)  # step 3 of a new line, below the step-4 checkpoint
    expected = forward_loss(training, datum)
    live.stop()

    live = LiveServer(server_settings(tmp_path)).start()
    try:
        live.wait_ready()
        service = hpcai.ServiceClient(base_url=live.base_url, api_key=key)
        resumed = service.create_training_client(model_id=training.model_id)
        assert forward_loss(resumed, datum) == pytest.approx(expected, rel=1e-5)
        with httpx.Client(base_url=live.base_url, headers={"X-API-Key": key}, timeout=60) as http:
            signal = http.get(
                f"/v1/runs/{training.model_id}", headers={"Authorization": f"Bearer {key}"}
            )
            assert signal.json()["step"] == 3
    finally:
        live.stop()
