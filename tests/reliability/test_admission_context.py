"""Generation length is capped by the model's context on every face (a 400 that says how many
tokens fit, never a 500 or a huge allocation), and Tinker's synchronous `/api/v1/sample`
counts against the per-key in-flight limit like every other route."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TINY
from tests.reliability.admission_support import make_key, scheduler_counts, start, wait_until

CONTEXT = 8192  # the tiny model's max_position_embeddings


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("context-data")
    server = start(data_dir, max_queued_per_tenant=1)
    key = make_key(data_dir, "alice")
    headers = {"Authorization": f"Bearer {key}", "X-API-Key": key}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as http:
        run = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4})
        assert run.status_code == 200, run.text
        yield server, http, run.json()["run_id"]
    server.stop()


def _tinker_sample(max_tokens: int, path: str = "/api/v1/sample") -> dict:
    return {
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
        "sampling_params": {"max_tokens": max_tokens, "temperature": 0},
        "base_model": TINY,
        "num_samples": 1,
    }


@pytest.mark.parametrize("max_tokens", [CONTEXT, 10**9])
def test_tinker_sample_beyond_the_context_is_a_400(live, max_tokens):
    _, http, _ = live
    answer = http.post("/api/v1/sample", json=_tinker_sample(max_tokens))
    assert answer.status_code == 400, answer.text
    assert f"context is {CONTEXT} tokens" in answer.text and "at most 8189" in answer.text


def test_signal_sample_beyond_the_context_is_a_400(live):
    _, http, run_id = live
    answer = http.post(f"/v1/runs/{run_id}/sample", json={"prompts": ["Hi"], "max_tokens": 9000})
    assert answer.status_code == 400, answer.text
    assert "lower max_tokens" in answer.text


def test_openai_completions_beyond_the_context_is_a_400(live):
    _, http, _ = live
    body = {"model": TINY, "prompt": "Hi", "max_tokens": 9000}
    answer = http.post("/v1/completions", json=body)
    assert answer.status_code == 400, answer.text


def test_tinker_sample_counts_against_the_in_flight_limit(live):
    server, http, _ = live
    long = {"model": TINY, "prompt": "Once", "max_tokens": 3000, "ignore_eos": True}
    with http.stream("POST", "/v1/completions", json=long | {"stream": True}) as streaming:
        assert streaming.status_code == 200
        lines = streaming.iter_lines()  # held: a dropped iterator closes the stream
        while not next(lines).startswith("data:"):
            pass
        # The limit is 1 and the stream is in flight: a synchronous Tinker sample waits its turn.
        answer = http.post("/api/v1/sample", json=_tinker_sample(2))
        assert answer.status_code == 429, answer.text
        assert "Retry-After" in answer.headers
    # Leaving the stream stopped it (test_cancel_stream.py); the key is free again.
    wait_until(lambda: scheduler_counts(server.base_url)["generating"] == 0, "the stop")
    wait_until(
        lambda: http.post("/api/v1/sample", json=_tinker_sample(2)).status_code == 200,
        "the key's in-flight count to drop",
        every=0.2,
    )
