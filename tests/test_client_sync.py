"""The sync SDK's retry loop over scripted `httpx.MockTransport` answers the real server cannot
easily produce on demand: 429/5xx with Retry-After, dropped connections, timeouts, x-should-retry.

Each test scripts the exact answers of one exchange; what the SDK does with the real server's
answers is tested in `tests/integration/test_sdk_sync.py`.
"""

from __future__ import annotations

import httpx
import pytest

from frontier_signal import (
    APIConnectionError,
    APITimeoutError,
    ConflictError,
    RateLimitError,
    ServerError,
    SignalClient,
    TrainingClient,
    ValidationError,
)

BASE = "http://signal.test"
RUN = "run_0001"
FB = {"loss": 2.0, "step": 1, "grad_norm": 0.5, "grad_stats": {}, "tokens": 10}


def error(status: int, message: str = "busy", **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "test_error", "code": None, "param": None}}
    return httpx.Response(status, json=body, headers={"x-request-id": "req_test", **headers})


class Script:
    """Answers requests with the given outcomes in order (a response, or an exception raised)."""

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def sleeps():
    return []


def client_for(script: Script, sleeps: list, **kwargs) -> SignalClient:
    http = httpx.Client(transport=httpx.MockTransport(script))
    return SignalClient("sk-test", BASE, http_client=http, sleep=sleeps.append, **kwargs)


def test_a_429_is_retried_after_the_retry_after_seconds_without_real_waiting(sleeps):
    script = Script(error(429, **{"retry-after": "2"}), error(429), httpx.Response(200, json=FB))
    result = client_for(script, sleeps).forward_backward(RUN, [{"text": "hello"}])
    assert result["loss"] == 2.0
    assert sleeps[0] == 2.0 and 0.375 <= sleeps[1] <= 1.0  # Retry-After, then backoff
    assert len(script.requests) == 3


def test_every_retry_of_a_post_carries_the_same_idempotency_key(sleeps):
    ok = httpx.Response(200, json=FB)
    script = Script(error(503), httpx.ConnectError("refused"), ok, httpx.Response(200, json=FB))
    client = client_for(script, sleeps)
    client.forward_backward(RUN, [{"text": "hello"}])
    keys = [r.headers["idempotency-key"] for r in script.requests]
    assert len(keys) == 3 and len(set(keys)) == 1
    client.forward_backward(RUN, [{"text": "again"}])
    assert script.requests[-1].headers["idempotency-key"] != keys[0]


def test_x_should_retry_false_stops_a_retryable_status_and_true_retries_any(sleeps):
    script = Script(error(409, "reused key", **{"x-should-retry": "false"}))
    with pytest.raises(ConflictError, match="reused key"):
        client_for(script, sleeps).optim_step(RUN)
    assert len(script.requests) == 1 and sleeps == []
    script = Script(
        error(400, "try again", **{"x-should-retry": "true"}), httpx.Response(200, json=FB)
    )
    assert client_for(script, sleeps).forward_backward(RUN, [{"text": "x"}])["step"] == 1
    assert len(script.requests) == 2


def test_a_400_is_not_retried_and_keeps_the_servers_message_and_request_id(sleeps):
    script = Script(error(400, "batch[0].messages needs an assistant turn"))
    with pytest.raises(ValidationError) as caught:
        client_for(script, sleeps).forward_backward(RUN, [{"text": "x"}])
    assert caught.value.message == "batch[0].messages needs an assistant turn"
    assert (caught.value.status_code, caught.value.request_id) == (400, "req_test")
    assert len(script.requests) == 1 and sleeps == []


def test_retries_stop_after_max_retries_with_the_last_error(sleeps):
    script = Script(*[error(429, **{"retry-after": "1"})] * 3)
    with pytest.raises(RateLimitError) as caught:
        client_for(script, sleeps, max_retries=2).list_models()
    assert caught.value.retry_after == 1.0 and sleeps == [1.0, 1.0]


def test_a_5xx_that_persists_raises_server_error_after_backing_off(sleeps):
    script = Script(*[error(502, "bad gateway")] * 4)
    with pytest.raises(ServerError, match="bad gateway"):
        client_for(script, sleeps).list_runs()
    assert len(sleeps) == 3 and sleeps == sorted(sleeps) and sleeps[-1] <= 2.0


def test_no_answer_raises_connection_or_timeout_errors_after_retrying(sleeps):
    script = Script(*[httpx.ConnectError("refused")] * 4)
    with pytest.raises(APIConnectionError, match="could not reach"):
        client_for(script, sleeps).list_models()
    assert len(sleeps) == 3
    script = Script(*[httpx.ReadTimeout("slow")] * 4)
    with pytest.raises(APITimeoutError):
        client_for(script, sleeps).list_models()


def test_the_training_client_backs_off_exponentially_and_the_inference_client_retries_at_once(
    sleeps,
):
    fail_twice = Script(error(503), error(503), httpx.Response(200, json=FB))
    http = httpx.Client(transport=httpx.MockTransport(fail_twice))
    training = TrainingClient(RUN, "sk-test", BASE, http_client=http, sleep=sleeps.append)
    training.forward_backward([{"text": "x"}])
    assert 0.375 <= sleeps[0] <= 0.5 and 0.75 <= sleeps[1] <= 1.0
    sleeps.clear()
    answer = {"outputs": ["y"], "logprobs": None, "finish_reasons": ["length"], "step": 0}
    fail_twice = Script(error(503), error(503), httpx.Response(200, json=answer))
    client = client_for(fail_twice, sleeps)
    assert client.inference(RUN).sample(["p"]) == ["y"]
    assert sleeps[0] == 0.0 and 0.375 <= sleeps[1] <= 0.5


def test_requests_carry_the_bearer_key_and_the_client_timeout(sleeps):
    script = Script(httpx.Response(200, json={"data": [{"id": "m", "loaded": True}]}))
    assert client_for(script, sleeps).list_models() == ["m"]
    request = script.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.extensions["timeout"]["read"] == 300
    assert "idempotency-key" not in request.headers  # only POSTs carry one


def test_an_error_event_mid_stream_raises_after_the_tokens_before_it(sleeps):
    body = b'data: {"text": "a"}\n\ndata: {"error": {"message": "oom", "type": "server_error"}}\n\n'
    script = Script(
        httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    stream = client_for(script, sleeps).inference(RUN).stream_sample("Hello")
    assert next(stream) == {"text": "a"}
    with pytest.raises(ServerError, match="oom"):
        next(stream)
    assert script.requests[0].headers["accept"] == "text/event-stream"


def test_a_standalone_client_takes_its_key_from_the_environment_and_closes_its_pool(monkeypatch):
    monkeypatch.setenv("FRONTIER_SIGNAL_API_KEY", "sk-env")
    with TrainingClient(RUN) as training:
        pool = training._transport.http_client
    assert pool.is_closed and training.api_key == "sk-env"
