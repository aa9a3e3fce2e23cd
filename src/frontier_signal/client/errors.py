"""Exceptions raised by the `frontier_signal` SDK.

One root (`SignalAPIError`), one class per HTTP status the Signal API answers with, and two for
"no answer at all" (`APIConnectionError`, `APITimeoutError`). Classes also inherit the matching
stdlib class where one exists (`ValueError`, `LookupError`) so generic code can catch them.

This module only defines the classes and the status → class table; reading a response and
deciding what to raise lives in `_core`.
"""

from __future__ import annotations


class SignalAPIError(Exception):
    """Root of every error the SDK raises.

    Attributes:
        message: What went wrong, as the server (or the SDK) said it.
        status_code: The HTTP status, or None when no response was received or the SDK
            rejected the call before sending it.
        request_id: The server's `x-request-id` for this request, if any (quote it in bug reports).
        type: The error `type` from the response body, if any.
        code: The error `code` from the response body, if any.
        param: The request field the error is about, if the server named one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.type = type
        self.code = code
        self.param = param

    def __str__(self) -> str:
        details = []
        if self.status_code is not None:
            details.append(f"HTTP {self.status_code}")
        if self.request_id:
            details.append(f"request {self.request_id}")
        return f"{self.message} ({', '.join(details)})" if details else self.message


class ValidationError(SignalAPIError, ValueError):
    """Bad input: HTTP 400/422, or an argument the SDK rejected before sending."""


class AuthenticationError(SignalAPIError):
    """HTTP 401 (missing or unknown key), or no API key configured at all."""


class PermissionDeniedError(AuthenticationError):
    """HTTP 403: the key is known but revoked or not allowed to do this."""


class NotFoundError(SignalAPIError, LookupError):
    """HTTP 404: unknown run, step, checkpoint or model (or another tenant's run)."""


class ConflictError(SignalAPIError):
    """HTTP 409: conflicting state, e.g. an idempotency key reused for a different call."""


class RateLimitError(SignalAPIError):
    """HTTP 429: over a per-tenant limit.

    Attributes:
        retry_after: Seconds the server asked us to wait (`Retry-After`), or None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(SignalAPIError):
    """HTTP 5xx: a fault on the server's side."""


class APIConnectionError(SignalAPIError):
    """No response: the server could not be reached or the connection broke."""


class APITimeoutError(APIConnectionError):
    """No response within the client's timeout."""


STATUS_ERRORS: dict[int, type[SignalAPIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitError,
}

# Error `type` strings in a body without a status (an error event inside an SSE stream).
TYPE_ERRORS: dict[str, type[SignalAPIError]] = {
    "invalid_request_error": ValidationError,
    "validation_error": ValidationError,
    "authentication_error": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "conflict_error": ConflictError,
    "rate_limit_error": RateLimitError,
    "server_error": ServerError,
}


def error_class_for_status(status_code: int) -> type[SignalAPIError]:
    """The exception class for an HTTP error status (unknown 4xx → the root class)."""
    if status_code >= 500:
        return ServerError
    return STATUS_ERRORS.get(status_code, SignalAPIError)
