"""Every error leaves the server as `{"error": {"message", "type", "code", "param"}}` with the
right status code; never a traceback, never a 500 for the caller's mistake. The Anthropic face
(`/v1/messages`) answers in Anthropic's shape instead:
`{"type": "error", "error": {"type", "message"}}`."""

from __future__ import annotations

import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from frontier_signal.engine.errors import EngineError, SchedulerStopped
from frontier_signal.server.schemas.rules import RULE_ERRORS
from frontier_signal.service.errors import ServiceError, describe

logger = logging.getLogger(__name__)
OPENAI_PATHS = ("/v1/chat/", "/v1/completions", "/v1/warmup", "/v1/models")
ANTHROPIC_PATHS = ("/v1/messages",)
# Anthropic's error types by status (docs.anthropic.com, "Errors").
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def printable(text: str) -> str:
    """Text any JSON encoder takes: unpaired surrogates (from the caller's input) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None):
    param = printable(param) if param is not None else None
    return {"error": {"message": printable(message), "type": type_, "code": code, "param": param}}


def _shown(value) -> str:
    """A short rendering of the caller's input for a message; never fails, whatever it is."""
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes that are not JSON"
    try:
        text = json.dumps(value, ensure_ascii=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text[:80]


_TYPE_TAGS = {"int", "float", "str", "bool", "none", "dict", "list", "tuple"}


def _where(location, field: str = "") -> str:
    """`("body", "data", 0, "tokens")` → `data[0].tokens`: the field as the caller wrote it
    (pydantic's union-member tags such as `int` or `list[str]` left out)."""
    where = ""
    for part in location:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part != "body" and part not in _TYPE_TAGS and "[" not in part and part.islower():
            where += f".{part}" if where else part
    if field:
        where += field if field.startswith("[") or not where else f".{field}"
    return where or "body"


def anthropic_error_body(status: int, message: str) -> dict:
    return {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message},
    }


def _shaped(request: Request, status: int, body: dict, headers=None) -> JSONResponse:
    """`body` (OpenAI's shape), or Anthropic's shape on the Anthropic face."""
    if request.url.path.startswith(ANTHROPIC_PATHS):
        body = anthropic_error_body(status, body["error"]["message"])
    return JSONResponse(body, status, headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, first = [], None
    for error in exc.errors():
        location, kind = error.get("loc", ()), error.get("type")
        if kind in RULE_ERRORS:  # the message starts with the field's own path
            where = _where(location, str(error["ctx"]["field"]))
            message = error.get("msg", "").split(": ", 1)[-1]
            part = f"{where}: {message}"
        elif kind == "json_invalid":
            where, part = "body", f"the body is not valid JSON ({error.get('msg')})"
        elif kind == "missing":
            where = _where(location)
            part = f"{where}: this field is required"
        elif isinstance(error.get("input"), bytes | bytearray):
            where = _where(location)
            part = (
                f"{where}: the body must be a JSON object sent with "
                "'Content-Type: application/json'"
            )
        else:
            where = _where(location)
            part = f"{where}: {error.get('msg')} (got {_shown(error.get('input'))})"
        first = first or where
        if part not in parts:
            parts.append(part)
    return "; ".join(parts[:4]) or "invalid request", first


def allowed_methods(request: Request) -> list[str]:
    """The methods of the documented path (/openapi.json) this URL matches most specifically:
    the one with the most literal characters. Starlette's own 405 names the methods of the first
    route whose pattern matches, which is wrong where patterns overlap (a `{name:path}`
    parameter also matches `.../NAME/archive`, the path of a sibling)."""
    best, methods = -1, []
    for path, operations in request.app.openapi()["paths"].items():
        literals = re.split(r"{[^}]+}", path)
        if re.fullmatch(".+".join(map(re.escape, literals)), request.url.path):
            literal = sum(map(len, literals))
            if literal > best:
                best, methods = literal, sorted(m.upper() for m in operations)
    return methods


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        # The OpenAI and Anthropic faces answer a bad parameter with 400, as theirs do.
        status = 400 if request.url.path.startswith(OPENAI_PATHS + ANTHROPIC_PATHS) else 422
        return _shaped(request, status, error_body(message, "invalid_request_error", param=param))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        if exc.status_code == 405:
            allowed = allowed_methods(request) or headers.get("Allow", "").split(", ")
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
        return _shaped(request, exc.status_code, error_body(message, type_), headers)

    async def known_error(request: Request, exc: Exception):
        status, type_, message, headers = describe(exc)
        if status >= 500:
            request_id = getattr(request.state, "request_id", "?")
            logger.error("request %s failed", request_id, exc_info=exc)
        return _shaped(request, status, error_body(message, type_), headers)

    # The error families raised on purpose; anything else is a bug, answered by the last-resort
    # `Exception` handler (Starlette re-raises it afterwards, so the server log has it too).
    for family in (ServiceError, EngineError, SchedulerStopped, Exception):
        app.add_exception_handler(family, known_error)
