"""The SDK's sans-I/O core: configuration, retry decisions, error parsing, SSE, local validation."""

from __future__ import annotations

import email.utils

import pydantic
import pytest

from frontier_signal import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RunConfig,
    ServerError,
    SignalAPIError,
    SignalClient,
    TrainingExample,
    ValidationError,
)
from frontier_signal.client import _calls, _core


def test_missing_api_key_raises_authentication_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("FRONTIER_SIGNAL_API_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="FRONTIER_SIGNAL_API_KEY"):
        SignalClient()


def test_key_and_base_url_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FRONTIER_SIGNAL_API_KEY", "sk-env")
    monkeypatch.setenv("FRONTIER_SIGNAL_BASE_URL", "http://signal.test:9000/")
    with SignalClient() as client:
        assert (client.api_key, client.base_url) == ("sk-env", "http://signal.test:9000")


def test_arguments_win_over_the_environment_and_base_url_defaults_to_localhost(monkeypatch):
    monkeypatch.setenv("FRONTIER_SIGNAL_API_KEY", "sk-env")
    monkeypatch.delenv("FRONTIER_SIGNAL_BASE_URL", raising=False)
    with SignalClient(api_key="sk-arg") as client:
        assert (client.api_key, client.base_url) == ("sk-arg", "http://127.0.0.1:8000")
    assert _core.resolve_base_url("http://h:1/v1/") == "http://h:1"


def test_client_repr_never_shows_the_key():
    with SignalClient(api_key="sk-secret") as client:
        assert "sk-secret" not in repr(client)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
def test_transient_statuses_are_retried(status):
    assert _core.RetryPolicy().should_retry_status(status, {})


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status):
    assert not _core.RetryPolicy().should_retry_status(status, {})


def test_the_server_can_steer_retries_with_x_should_retry():
    policy = _core.RetryPolicy()
    assert not policy.should_retry_status(503, {"x-should-retry": "false"})
    assert policy.should_retry_status(400, {"x-should-retry": "true"})


def test_backoff_doubles_from_half_a_second_up_to_eight_with_at_most_a_quarter_jitter():
    no_jitter = _core.RetryPolicy(random=lambda: 0.0)
    assert [no_jitter.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    full_jitter = _core.RetryPolicy(random=lambda: 0.999999)
    assert 0.375 <= full_jitter.delay(0) < 0.5


def test_inference_policy_retries_once_at_once_then_backs_off():
    policy = _core.RetryPolicy(immediate_first_retry=True, random=lambda: 0.0)
    assert [policy.delay(n) for n in range(4)] == [0.0, 0.5, 1.0, 2.0]


def test_retry_after_in_seconds_milliseconds_or_http_date_wins_over_backoff():
    policy = _core.RetryPolicy(clock=lambda: 1_000_000.0)
    assert policy.delay(0, {"retry-after": "3"}) == 3.0
    assert policy.delay(0, {"retry-after-ms": "250"}) == 0.25
    date = email.utils.formatdate(1_000_007.0, usegmt=True)
    assert policy.delay(0, {"retry-after": date}) == 7.0
    assert policy.delay(0, {"retry-after": "3600"}) == 60.0  # capped


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, ValidationError),
        (422, ValidationError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
        (418, SignalAPIError),
    ],
)
def test_each_error_status_maps_to_its_exception_with_message_and_request_id(status, cls):
    content = b'{"error": {"message": "batch[0] is bad", "type": "t", "code": "c", "param": "p"}}'
    exc = _core.error_from_response(status, {"x-request-id": "req_9"}, content)
    assert type(exc) is cls
    assert (exc.message, exc.status_code, exc.request_id) == ("batch[0] is bad", status, "req_9")
    assert (exc.code, exc.param) == ("c", "p")
    assert "req_9" in str(exc) and "batch[0] is bad" in str(exc)


def test_exceptions_also_inherit_the_matching_stdlib_classes():
    assert issubclass(ValidationError, ValueError)
    assert issubclass(NotFoundError, LookupError)
    assert issubclass(PermissionDeniedError, AuthenticationError)


def test_rate_limit_error_carries_retry_after():
    exc = _core.error_from_response(429, {"retry-after": "2"}, b'{"error": {"message": "slow"}}')
    assert isinstance(exc, RateLimitError) and exc.retry_after == 2.0


def test_fastapi_detail_and_non_json_bodies_still_give_a_message():
    detail = b'{"detail": [{"loc": ["body", "batch"], "msg": "Field required"}]}'
    assert _core.error_from_response(422, {}, detail).message == "body.batch: Field required"
    assert _core.error_from_response(502, {}, b"<html>Bad Gateway</html>").message == (
        "<html>Bad Gateway</html>"
    )
    assert "503" in _core.error_from_response(503, {}, b"").message


def test_sse_decoder_reassembles_events_split_anywhere_including_inside_utf8():
    stream = (
        'data: {"text": "caf\u00e9", "token_id": 7, "logprob": -0.1}\r\n\r\n'
        ": keep-alive comment\n\n"
        'event: token\ndata: {"text": " ok"}\n\n'
        'data: {"finish_reason": "stop"}\n\n'
        "data: [DONE]\n\n"
        'data: {"ignored": true}\n\n'
    ).encode()
    for size in (1, 2, 3, 7, len(stream)):
        decoder = _core.SSEDecoder()
        events = []
        for i in range(0, len(stream), size):
            events += decoder.feed(stream[i : i + size])
        events += decoder.flush()
        assert events == [
            {"text": "caf\u00e9", "token_id": 7, "logprob": -0.1},
            {"text": " ok"},
            {"finish_reason": "stop"},
        ], size
        assert decoder.done


def test_sse_decoder_joins_multi_line_data_and_flushes_an_unterminated_last_event():
    decoder = _core.SSEDecoder()
    assert decoder.feed(b'data: {"a":\ndata: 1}\n\ndata: {"b": 2}') == [{"a": 1}]
    assert decoder.flush() == [{"b": 2}]


def test_stream_error_events_map_by_status_or_type():
    assert isinstance(_core.error_from_event({"message": "x", "status": 404}), NotFoundError)
    assert isinstance(_core.error_from_event({"type": "invalid_request_error"}), ValidationError)
    assert isinstance(_core.error_from_event({"message": "boom"}), ServerError)


def test_run_config_has_the_seed_defaults():
    config = RunConfig(base_model="m")
    assert config.model_dump() == {
        "base_model": "m",
        "lora_r": 32,
        "lora_alpha": 64,
        "lora_dropout": 0.0,
        "lora_target_modules": None,
        "optimizer": "adamw_8bit",
        "learning_rate": 3e-4,
        "weight_decay": 0.01,
        "max_seq_length": 2048,
        "bf16": True,
        "gradient_checkpointing": True,
        "seed": None,
    }


def test_bad_run_config_values_raise_validation_error_naming_the_field():
    defaults = {name: field.default for name, field in RunConfig.model_fields.items()}
    del defaults["base_model"]
    with pytest.raises(ValidationError, match="optimizer"):
        _calls.run_config("m", None, {**defaults, "optimizer": "adam9"})
    with pytest.raises(ValidationError, match="not both"):
        _calls.run_config(RunConfig(base_model="m"), None, {**defaults, "lora_r": 8})
    assert _calls.run_config(RunConfig(base_model="m", lora_r=4), None, defaults).lora_r == 4


def test_training_example_needs_exactly_one_of_text_or_messages():
    assert TrainingExample(text="hi").to_wire() == {"text": "hi"}
    chat = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert TrainingExample(messages=chat).to_wire() == {"messages": chat}
    for bad in ({}, {"text": "a", "messages": chat}, {"messages": chat[:1]}, {"txt": "a"}):
        with pytest.raises(pydantic.ValidationError):
            TrainingExample(**bad)


def test_batches_mix_dicts_and_training_examples_and_bad_ones_fail_before_sending():
    batch = [{"text": "a"}, TrainingExample(text="b")]
    assert _calls.training_examples(batch) == [{"text": "a"}, {"text": "b"}]
    for bad, match in [([], "empty"), ("text", "list"), ({"text": "a"}, "list")]:
        with pytest.raises(ValidationError, match=match):
            _calls.training_examples(bad)
    with pytest.raises(ValidationError, match=r"batch\[1\]"):
        _calls.training_examples([{"text": "a"}, {"messages": []}])


def test_sampling_arguments_are_checked_before_sending():
    with pytest.raises(ValidationError, match="list of strings"):
        _calls.sample("run_1", "one prompt")
    with pytest.raises(ValidationError, match="empty"):
        _calls.sample("run_1", [])
    with pytest.raises(ValidationError, match="top_p"):
        _calls.sample("run_1", ["p"], top_p=0)
    with pytest.raises(ValidationError, match="unknown sampling argument"):
        _calls.sample("run_1", ["p"], temprature=0.5)


def test_save_mode_and_hub_arguments_are_checked_before_sending():
    with pytest.raises(ValidationError, match="mode"):
        _calls.save_state("run_1", mode="full")
    with pytest.raises(ValidationError, match="hub_model_id"):
        _calls.save_state("run_1", push_to_hub=True)


def test_run_ids_are_quoted_into_paths():
    assert _calls.get_run("run/../x").path == "/v1/runs/run%2F..%2Fx"
