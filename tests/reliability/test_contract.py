"""The contract is honest (issue 18, item 6): /openapi.json lists the answers the server gives,
non-JSON answers are declared as what they are, and a 405 names every method of the path."""

from __future__ import annotations

import pytest

CHECKPOINT = "/api/v1/training_runs/{run_id}/checkpoints/{checkpoint_id}"


@pytest.fixture(scope="module")
def spec(alice_http) -> dict:
    return alice_http.get("/openapi.json").json()


def _responses(spec: dict, path: str, method: str) -> dict:
    return spec["paths"][path][method]["responses"]


def test_every_operation_declares_its_errors_with_the_one_envelope(spec):
    for path, operations in spec["paths"].items():
        if path in ("/health", "/api/v1/healthz"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            errors = [code for code in responses if code.isdigit() and int(code) >= 400]
            assert errors, (method, path)
            for code in errors:
                content = responses[code]["content"]
                assert list(content) == ["application/json"], (method, path, code)
            if operation.get("requestBody") or operation.get("parameters"):
                schema = responses["422" if "422" in responses else "400"]["content"]
                # The Anthropic face answers in Anthropic's own error shape.
                envelope = "AnthropicErrorBody" if path.startswith("/v1/messages") else "ErrorBody"
                assert envelope in str(schema), (method, path)


def test_no_content_streams_and_files_are_declared_as_such(spec):
    for suffix, method in (("/ttl", "put"), ("/publish", "post"), ("/publish", "delete")):
        responses = _responses(spec, CHECKPOINT + suffix, method)
        assert "204" in responses and "200" not in responses, (suffix, method)
    assert "204" in _responses(spec, CHECKPOINT, "delete")
    stream = _responses(spec, "/v1/runs/{run_id}/sample/stream", "post")["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    chat = _responses(spec, "/v1/chat/completions", "post")["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(chat)
    for path in ("/v1/runs/{run_id}/checkpoints/{checkpoint_id}/archive", CHECKPOINT + "/archive"):
        assert list(_responses(spec, path, "get")["200"]["content"]) == ["application/gzip"]
    raw = _responses(spec, "/api/v1/checkpoint_files/{checkpoint_id}/{relpath}", "get")
    assert list(raw["200"]["content"]) == ["application/octet-stream"]
    body = spec["paths"]["/api/v1/forward_backward"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-protobuf"} <= set(body)


def test_a_405_names_every_method_the_path_takes(alice_http):
    # Three routes share this path: POST and DELETE .../publish, DELETE .../{checkpoint_id:path}.
    answer = alice_http.get("/api/v1/training_runs/run_x/checkpoints/weights/a/publish")
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) == {"DELETE", "POST"}
    assert "POST" in answer.json()["error"]["message"]
    answer = alice_http.put("/v1/runs")
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) == {"GET", "POST"}
