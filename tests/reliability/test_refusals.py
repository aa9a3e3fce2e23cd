"""Refuse what cannot work instead of accepting it (issue 18, item 3).

Prompts longer than the model's context, on every face that takes them (the OpenAI face already
refused them; Signal sample, Tinker sample and embeddings now do, in the engine), a
`max_seq_length` over the context, and non-finite hyperparameters (which used to be stored as
`Infinity` and train to NaN).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY
from tests.reliability.support import assert_refused, new_model, new_run, settle

CONTEXT = 8192  # tiny-llama's max_position_embeddings
LONG_TEXT = "hello " * (CONTEXT + 100)


@pytest.fixture(scope="module")
def run_id(alice_http):
    return new_run(alice_http)


def test_signal_sample_and_embeddings_refuse_a_prompt_over_the_context(alice_http, run_id):
    answer = alice_http.post(f"/v1/runs/{run_id}/sample", json={"prompts": [LONG_TEXT]})
    assert answer.status_code == 400, answer.text
    assert_refused(answer, "context is 8192 tokens", "shorten")
    answer = alice_http.post(f"/v1/runs/{run_id}/embeddings", json={"texts": ["ok", LONG_TEXT]})
    assert answer.status_code == 400, answer.text
    assert_refused(answer, "texts[1]", "context is 8192 tokens")
    # A prompt that fits still works.
    fine = alice_http.post(f"/v1/runs/{run_id}/sample", json={"prompts": ["hi"], "max_tokens": 2})
    assert fine.status_code == 200, fine.text


def test_tinker_sample_refuses_a_prompt_over_the_context(alice_http):
    body = {
        "base_model": TINY,
        "prompt": {"chunks": [{"tokens": [5] * (CONTEXT + 1)}]},
        "sampling_params": {"max_tokens": 1},
    }
    answer = alice_http.post("/api/v1/sample", json=body)
    assert answer.status_code == 400, answer.text
    assert_refused(answer, "context is 8192 tokens")
    # The asynchronous form fails its future with the same message, as a user error.
    failed = settle(alice_http, alice_http.post("/api/v1/asample", json=body))
    assert "context is 8192 tokens" in json.dumps(failed)


def test_a_max_seq_length_over_the_context_is_refused(alice_http):
    answer = alice_http.post(
        "/v1/runs", json={"base_model": TINY, "lora_r": 4, "max_seq_length": CONTEXT + 1}
    )
    assert answer.status_code == 400, answer.text
    assert_refused(answer, "max_seq_length", "8192")
    assert new_run(alice_http, max_seq_length=CONTEXT)


def test_non_finite_hyperparameters_never_reach_a_run(alice_http):
    text = json.dumps({"base_model": TINY, "lora_alpha": 1e309})  # Python writes Infinity
    answer = alice_http.post("/v1/runs", content=text, headers={"content-type": "application/json"})
    assert_refused(answer, "lora_alpha", "finite")
    model = new_model(alice_http)
    step = {"model_id": model, "adam_params": {"learning_rate": float("nan")}}
    text = json.dumps(step)
    answer = alice_http.post(
        "/api/v1/optim_step", content=text, headers={"content-type": "application/json"}
    )
    assert_refused(answer, "adam_params.learning_rate", "finite")
