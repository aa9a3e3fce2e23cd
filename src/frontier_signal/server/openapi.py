"""What /openapi.json says the server answers, declared once for every router.

- `errors(*codes)`: the error answers a router (or a route) really gives, each with the one
  error envelope every handler writes (`{"error": {message, type, code, param}}`); 422 is
  declared with it too, replacing FastAPI's default `{"detail": [...]}`, which this server never
  sends.
- `EVENT_STREAM`, `GZIP`, `BINARY`, `PROMETHEUS_TEXT`: 200 answers that are not JSON
  (server-sent events, a `.tar.gz` archive, a raw file, Prometheus text), declared as what they
  are; `EVENT_STREAM_ALTERNATIVE` adds the stream to a JSON route's `response_model` (a body
  with `stream: true`). Every JSON answer has a `response_model` (tests/test_openapi_responses.py).
- `install_openapi(app, bodies)`: error answers always JSON; request bodies a route reads
  itself (the Tinker forward_backward takes JSON or protobuf) documented from their schema.
Nothing here changes what a route does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorBody(BaseModel):
    """Every error answer of every face."""

    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """Every error answer of the Anthropic face (`/v1/messages`), in Anthropic's shape."""

    type: str = "error"
    error: AnthropicErrorDetail


class DetailBody(BaseModel):
    """hpcai's form of a failed future (`retrieve_future`, 400)."""

    detail: str


WHY = {
    400: "The request is invalid (the message says which field and how to fix it).",
    401: "No API key, or not a valid one.",
    403: "Not allowed (a signed URL that is wrong, for another file, or expired).",
    404: "Not found, or it belongs to another key.",
    409: "Conflicts with the current state (an idempotency key reused for another body).",
    410: "Gone: the session ended or expired.",
    422: "The body or a parameter does not match the schema (the message names the field).",
    429: "Too many requests in flight for this key; retry after `Retry-After` seconds.",
    500: "A server bug; the message carries the request id to report.",
    502: "A third party (the model hub) failed.",
    503: "Not ready (models loading) or shutting down; retry after `Retry-After` seconds.",
}


# FastAPI's `responses=` argument: extra answers by status code, for /openapi.json.
Responses = dict[int | str, dict[str, Any]]


def errors(*codes: int) -> Responses:
    return {code: {"model": ErrorBody, "description": WHY[code]} for code in codes}


SIGNAL_ERRORS = errors(400, 401, 404, 409, 422, 429, 500, 502, 503)
DASHBOARD_ERRORS = errors(400, 401, 404, 422, 500)
ANTHROPIC_ERRORS: Responses = {
    code: {"model": AnthropicErrorBody, "description": WHY[code]}
    for code in (400, 401, 404, 429, 500, 503)
}
PROMETHEUS_TEXT: Responses = {
    200: {
        "description": "The Prometheus text exposition format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    500: {"model": ErrorBody, "description": WHY[500]},
}
TINKER_ERRORS = errors(400, 401, 403, 404, 409, 410, 422, 429, 500, 503)
OPENAI_ERRORS = errors(400, 401, 404, 429, 500, 503)

BINARY_SCHEMA = {"type": "string", "format": "binary"}
# One server-sent event as schemathesis and OpenAPI 3.2's `itemSchema` see it: `data` holds a
# JSON chunk (or `[DONE]`), `event` its type where the face names one (Anthropic).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
SSE_CONTENT = {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}
EVENT_STREAM: Responses = {
    200: {
        "description": "Server-sent events (`data: {json}` lines, then `data: [DONE]`).",
        "content": SSE_CONTENT,
    }
}
GZIP: Responses = {
    200: {
        "description": "The checkpoint folder as a .tar.gz archive.",
        "content": {"application/gzip": {"schema": BINARY_SCHEMA}},
    }
}
BINARY: Responses = {
    200: {
        "description": "The file's bytes.",
        "content": {"application/octet-stream": {"schema": BINARY_SCHEMA}},
    }
}
NO_CONTENT: Responses = {204: {"description": "Done; no body."}}


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


EVENT_STREAM_ALTERNATIVE: Responses = {
    200: {
        "description": "The answer (JSON), or its chunks as server-sent events when the body "
        "asks for `stream: true`.",
        "content": SSE_CONTENT,
    }
}


def _errors_are_json(schema: dict) -> None:
    """An error answer is always the JSON envelope, also on routes whose success is a stream
    or a file (FastAPI would give it the route's media type); FastAPI's default 422 shape
    (`{"detail": [...]}`), which no handler here sends, is left out (a face that answers 422
    declares it with the envelope)."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]
            for status, response in responses.items():
                content = response.get("content", {})
                if status.isdigit() and int(status) >= 400 and "application/json" not in content:
                    response["content"] = {"application/json": next(iter(content.values()))}


def install_openapi(
    app: FastAPI, bodies: dict[tuple[str, str], tuple[type[BaseModel], str, list[str]]]
) -> None:
    """Error answers as JSON everywhere, and `{(method, path): (pydantic model, component
    name, [content types])}` documented as the request bodies of routes that read the raw
    body themselves (FastAPI cannot see them)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        _errors_are_json(schema)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        for (method, path), (model, name, content_types) in bodies.items():
            operation = schema["paths"].get(path, {}).get(method)
            if operation is None:
                continue
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for inner, definition in model_schema.pop("$defs", {}).items():
                components.setdefault(inner, definition)
            components[name] = model_schema
            reference = {"$ref": f"#/components/schemas/{name}"}
            operation["requestBody"] = {
                "required": True,
                "content": {kind: {"schema": reference} for kind in content_types},
            }
        app.openapi_schema = schema
        return schema

    # FastAPI's documented way to customise the schema: replace the app's `openapi` method.
    app.openapi = openapi  # type: ignore[method-assign]
