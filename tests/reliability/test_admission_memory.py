"""Runs are admitted against a memory budget per server and per key (settings, here from the
environment): a rank that can never fit is a 400, one that does not fit beside the key's (or
the server's) other runs a 409 saying what is left, and deleting a run frees its share. Both the
Signal `create_run` and the Tinker `create_model` faces follow the one rule."""

from __future__ import annotations

import httpx
import pytest

from frontier_signal.service.settings import ServiceSettings
from tests.conftest import TINY
from tests.live_server import LiveServer
from tests.reliability.admission_support import make_key

# On the tiny model (2 layers, hidden 64), attention + MLP LoRA holds 2,048 * rank parameters,
# 16 bytes each with AdamW: rank 256 ≈ 8 MiB, rank 1024 ≈ 32 MiB.
RANK_8_MIB = 256


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("memory-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRONTIER_SIGNAL_RUN_MEMORY_BUDGET_MIB", "25")
        patch.setenv("FRONTIER_SIGNAL_RUN_MEMORY_PER_TENANT_MIB", "17")
        settings = ServiceSettings(data_dir=data_dir, models=[TINY], dtype="float32", device="cpu")
    assert settings.run_memory_budget_mib == 25 and settings.run_memory_per_tenant_mib == 17
    server = LiveServer(settings).start()
    server.wait_ready()
    keys = {name: make_key(data_dir, name) for name in ("alice", "bob")}
    yield server, keys
    server.stop()


def _create(server, key: str, rank: int, optimizer: str = "adamw") -> httpx.Response:
    body = {"base_model": TINY, "lora_r": rank, "lora_target_modules": None, "optimizer": optimizer}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{server.base_url}/v1/runs", json=body, headers=headers, timeout=120)


def _delete(server, key: str, run_id: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    answer = httpx.delete(f"{server.base_url}/v1/runs/{run_id}", headers=headers, timeout=120)
    assert answer.status_code in (200, 204), answer.text


def test_a_rank_that_can_never_fit_is_refused_with_what_it_needs(live):
    server, keys = live
    answer = _create(server, keys["alice"], 1024)
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "32.0 MiB" in message and "17.0 MiB" in message and "lora_r" in message
    # adamw_8bit (the Signal default) keeps 2 bytes of moments a parameter, not 8: 10 in all.
    answer = _create(server, keys["alice"], 1024, optimizer="adamw_8bit")
    assert answer.status_code == 400, answer.text
    assert "20.0 MiB" in answer.json()["error"]["message"]


def test_runs_fit_until_the_budget_is_held_and_deleting_frees_it(live):
    server, keys = live
    alice, bob = keys["alice"], keys["bob"]
    small = _create(server, alice, 8)
    assert small.status_code == 200, small.text  # a run that fits is admitted
    first = _create(server, alice, RANK_8_MIB)
    second = _create(server, alice, RANK_8_MIB)
    assert first.status_code == 200 and second.status_code == 200, second.text
    third = _create(server, alice, RANK_8_MIB)
    assert third.status_code == 409, third.text
    message = third.json()["error"]["message"]
    assert "8.0 MiB" in message and "leaving 0.8 MiB" in message and "delete a run" in message
    # bob's own share is untouched, but the server's budget (25 MiB) runs out next.
    assert _create(server, bob, RANK_8_MIB).status_code == 200
    refused = _create(server, bob, RANK_8_MIB)
    assert refused.status_code == 409 and "the server's runs" in refused.text, refused.text
    _delete(server, alice, first.json()["run_id"])
    again = _create(server, alice, RANK_8_MIB)
    assert again.status_code == 200, again.text


def test_the_tinker_face_refuses_a_model_over_the_budget_at_once(live):
    server, keys = live
    body = {
        "base_model": TINY,
        "lora_config": {"rank": 512, "train_attn": True, "train_mlp": True},
    }
    headers = {"X-API-Key": keys["bob"]}
    answer = httpx.post(
        f"{server.base_url}/api/v1/create_model", json=body, headers=headers, timeout=120
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert "MiB" in answer.text and "rank" in answer.text
