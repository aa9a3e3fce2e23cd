"""Every error leaves the server as `{"error": {"message", "type", "code", "param"}}` with the
right status code; never a traceback, never a 500 for the caller's mistake. The Anthropic face
(`/v1/messages`) answers in Anthropic's shape instead:
`{"type": "error", "error": {"type", "message"}}`."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from frontier_signal.engine.errors import EngineError
from frontier_signal.engine.scheduler import SchedulerStopped
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


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None):
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


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
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(location) or "body"
        first = first or where
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('msg')})")
        elif error.get("type") == "missing":
            parts.append(f"{where}: this field is required")
        else:
            parts.append(f"{where}: {error.get('msg')} (got {json.dumps(error.get('input'))[:80]})")
    return "; ".join(parts) or "invalid request", first


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
        return _shaped(request, exc.status_code, error_body(str(exc.detail), type_), exc.headers)

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
