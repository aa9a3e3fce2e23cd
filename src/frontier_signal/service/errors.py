"""Service errors: each knows its HTTP status, so the server maps them without guessing.

Engine errors (`InvalidInputError`, `NotFoundError`) are mapped by the server too; these cover
what only the service knows about: tenants, keys, limits, idempotency, the hub.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Root of service errors. `status` is the HTTP status the server answers with."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class InvalidRequest(ServiceError, ValueError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(ServiceError, PermissionError):
    status = 401
    type = "authentication_error"


class Forbidden(ServiceError, PermissionError):
    status = 403
    type = "permission_error"


class NotFound(ServiceError, LookupError):
    status = 404
    type = "not_found_error"


class Gone(ServiceError):
    """The thing existed but has ended (a finished or expired tinker session)."""

    status = 410
    type = "gone_error"


class Conflict(ServiceError):
    status = 409
    type = "conflict_error"


class RateLimited(ServiceError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message, {"Retry-After": str(max(1, round(retry_after)))})
        self.retry_after = retry_after


class UpstreamError(ServiceError):
    """A third party (the model hub) failed; retrying the same call will not help."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str):
        super().__init__(message, {"x-should-retry": "false"})


class Unavailable(ServiceError):
    """Not now, worth retrying: 503 with `Retry-After` and `x-should-retry: true` (the SDK,
    `openai`, `tinker` and `hpcai` clients retry it)."""

    status = 503
    type = "unavailable_error"

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message, retry_headers(retry_after))


def retry_headers(retry_after: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(retry_after))), "x-should-retry": "true"}


class StoredError(ServiceError):
    """The recorded failure of an earlier request, replayed for a retry with its key."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status = status
        self.type = type_


def describe(exc: BaseException) -> tuple[int, str, str, dict[str, str]]:
    """(HTTP status, error type, message, headers) for any exception the service lets out.

    Engine errors are the user's mistakes (400/404); anything unexpected is a 500 whose message
    does not leak internals (the traceback goes to the log).
    """
    from frontier_signal.engine.errors import (
        InvalidInputError,
        RunNotHeld,
        SchedulerStopped,
        WorkerLost,
    )
    from frontier_signal.engine.errors import NotFoundError as EngineNotFound

    if isinstance(exc, ServiceError):
        return exc.status, exc.type, exc.message, exc.headers
    if isinstance(exc, WorkerLost | RunNotHeld):  # a worker died or restarted: retry
        return 503, "unavailable_error", str(exc), retry_headers(1)
    if isinstance(exc, EngineNotFound):
        return 404, "not_found_error", str(exc), {}
    if isinstance(exc, InvalidInputError):
        return 400, "invalid_request_error", str(exc), {}
    if isinstance(exc, SchedulerStopped):
        return 503, "unavailable_error", str(exc), retry_headers(5)
    return 500, "server_error", "internal server error; the server log has the details", {}
