"""A caller's mistake is a 4xx with a message naming the field, never a 500 (issue 18, item 2).

Each case is what a reliability pass sent to the real server and got a 500 (or a 204 that broke
later) for; the rules live in the shared schema base (server/schemas/rules.py), the error
handler (server/errors.py), the signer and the checkpoint TTL bounds.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import TINY
from tests.reliability.support import assert_refused, new_model, new_run, settle

SURROGATE = "caf\ud800e"


def post_raw(http, path: str, body) -> object:
    """JSON as a careless client writes it: escaped lone surrogates, NaN, Infinity, 1e400."""
    text = json.dumps(body, ensure_ascii=True, allow_nan=True)
    return http.post(path, content=text, headers={"content-type": "application/json"})


@pytest.fixture(scope="module")
def run_id(alice_http):
    return new_run(alice_http)


@pytest.fixture(scope="module")
def model_id(alice_http):
    return new_model(alice_http)


@pytest.mark.parametrize("path", ["/v1/runs", "/api/v1/create_model", "/v1/chat/completions"])
def test_a_body_that_is_not_json_is_a_4xx_naming_the_content_type(alice_http, path):
    answer = alice_http.post(path, content=b"base_model=x", headers={"content-type": "text/plain"})
    assert_refused(answer, "application/json")


def test_telemetry_in_text_plain_is_a_4xx(alice_http):
    answer = alice_http.post(
        "/api/v1/telemetry", content="hello", headers={"content-type": "text/plain"}
    )
    assert_refused(answer, "application/json")


def test_lone_surrogates_are_refused_naming_the_field_on_every_face(alice_http, run_id):
    cases = {
        "/v1/chat/completions": (
            {"model": TINY, "messages": [{"role": "user", "content": SURROGATE}]},
            "messages[0].content",
        ),
        "/v1/completions": ({"model": TINY, "prompt": SURROGATE}, "prompt"),
        f"/v1/runs/{run_id}/sample": ({"prompts": ["ok", SURROGATE]}, "prompts[1]"),
        f"/v1/runs/{run_id}/forward_backward": (
            {"batch": [{"text": SURROGATE}]},
            "batch[0].text",
        ),
        f"/v1/runs/{run_id}/embeddings": ({"texts": [SURROGATE]}, "texts[0]"),
        "/api/v1/create_session": ({"tags": [SURROGATE]}, "tags[0]"),
    }
    for path, (body, field) in cases.items():
        body = assert_refused(post_raw(alice_http, path, body), field, "surrogate")
        assert body["error"]["param"] == field, (path, body)


def test_integers_beyond_64_bits_are_refused(alice_http, model_id):
    answer = post_raw(
        alice_http, "/api/v1/create_model", {"base_model": TINY, "lora_config": {"seed": 2**70}}
    )
    assert_refused(answer, "lora_config.seed")
    sample = {
        "base_model": TINY,
        "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
        "sampling_params": {"max_tokens": 2, "seed": 2**64},
    }
    assert_refused(post_raw(alice_http, "/api/v1/asample", sample), "sampling_params.seed")
    # Under 2^64 but over the I-JSON range.
    sample["sampling_params"]["seed"] = 2**63 + 1
    assert_refused(post_raw(alice_http, "/api/v1/asample", sample), "seed")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e400])
def test_non_finite_numbers_in_integer_tensors_are_refused(alice_http, model_id, bad):
    datum = {
        "model_input": {"chunks": [{"tokens": [1, 2, 3]}]},
        "loss_fn_inputs": {"target_tokens": {"data": [2, bad, 4], "dtype": "int64"}},
    }
    body = {"model_id": model_id, "forward_backward_input": {"data": [datum]}}
    answer = post_raw(alice_http, "/api/v1/forward_backward", body)
    assert_refused(answer, "target_tokens.data[1]", "finite")


def test_non_finite_hyperparameters_are_refused_not_stored(alice_http):
    for config in ({"lora_alpha": 1e309}, {"learning_rate": float("nan")}, {"lora_alpha": "inf"}):
        answer = post_raw(alice_http, "/v1/runs", {"base_model": TINY, **config})
        assert_refused(answer, next(iter(config)))
    answer = post_raw(
        alice_http,
        "/v1/chat/completions",
        {"model": TINY, "messages": [], "temperature": float("inf")},
    )
    assert_refused(answer, "temperature")


def test_a_ttl_too_far_is_refused_and_a_stored_one_breaks_no_listing(
    alice_http, model_id, hard_server
):
    saved = settle(
        alice_http,
        alice_http.post("/api/v1/save_weights", json={"model_id": model_id, "path": "t"}),
    )
    assert saved["path"].endswith("/weights/t") or saved["path"].endswith("/training/t")
    ttl_url = f"/api/v1/training_runs/{model_id}/checkpoints/weights/t/ttl"
    assert_refused(alice_http.put(ttl_url, json={"ttl_seconds": 10**12}), "ttl_seconds")
    huge = '{"ttl_seconds": 1' + "0" * 400 + "}"  # 10^400
    answer = alice_http.put(ttl_url, content=huge, headers={"content-type": "application/json"})
    assert_refused(answer, "ttl_seconds")
    assert alice_http.put(ttl_url, json={"ttl_seconds": 3600}).status_code == 204
    # A row stored by an older version, before TTLs were bounded: listings still answer.
    store = hard_server.state.store
    (row,) = [c for c in store.list_checkpoints(model_id) if c.name == "t"]
    store.update_checkpoint(row.id, expires_at=time.time() + 10**12)
    listed = alice_http.get(f"/api/v1/training_runs/{model_id}/checkpoints")
    assert listed.status_code == 200, listed.text
    assert alice_http.get("/api/v1/training_runs").status_code == 200
    # ... and the start-up repair clamps it (run here on the live store).
    assert store.clamp_expiry(10 * 365 * 24 * 3600) >= 1


def test_a_non_ascii_signature_is_a_403_not_a_500(alice_http):
    answer = alice_http.get(
        "/api/v1/checkpoint_files/ckpt_x/a.bin", params={"expires": "1", "signature": "é" * 64}
    )
    assert answer.status_code == 403, answer.text


def test_a_malformed_hub_model_id_is_the_callers_400_not_a_502(alice_http, run_id):
    for repo in ("no-slash", "a--b/c", "me/model.", "x" * 200):
        answer = alice_http.post(
            f"/v1/runs/{run_id}/save_state", json={"push_to_hub": True, "hub_model_id": repo}
        )
        assert answer.status_code == 400, (repo, answer.text)
        assert "hub_model_id" in answer.json()["error"]["message"]


def test_a_lora_alpha_beyond_float32_is_refused(alice_http):
    """Found by the schemathesis run: alpha 1e300 made the adapter's scale inf, and inf times a
    fresh LoRA's zero B is NaN in every forward (its embeddings came back as nulls)."""
    answer = alice_http.post("/v1/runs", json={"base_model": TINY, "lora_alpha": 1e300})
    assert_refused(answer, "LoRA alpha", "float32")
    assert new_run(alice_http, lora_alpha=1e6)
