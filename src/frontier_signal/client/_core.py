"""The sans-I/O core of the SDK: configuration, retry decisions, error parsing and SSE decoding.

Every decision the clients make lives here as plain functions and small classes: where the key
and base URL come from, whether a failed attempt is retried and after how long, which exception
a response becomes, how server-sent events are cut into dicts. Nothing here opens a socket or
sleeps; `_http` does the sending (sync and async differ only there), and `_calls` describes
each endpoint.
"""

from __future__ import annotations

import codecs
import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    TYPE_ERRORS,
    AuthenticationError,
    RateLimitError,
    ServerError,
    SignalAPIError,
    error_class_for_status,
)

API_KEY_ENV = "FRONTIER_SIGNAL_API_KEY"
BASE_URL_ENV = "FRONTIER_SIGNAL_BASE_URL"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"

RETRY_STATUSES = frozenset({408, 409, 429})
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0  # a longer Retry-After is honoured only up to this many seconds


# ----- configuration ----------------------------------------------------------------------


def resolve_api_key(api_key: str | None) -> str:
    """The API key: the argument, else `$FRONTIER_SIGNAL_API_KEY`.

    Raises:
        AuthenticationError: Neither is set (raised locally; nothing is sent).
    """
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if not key:
        raise AuthenticationError(
            f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
        )
    return key


def resolve_base_url(base_url: str | None) -> str:
    """The server root: the argument, else `$FRONTIER_SIGNAL_BASE_URL`, else localhost:8000.

    A trailing slash or `/v1` is dropped (the SDK adds `/v1/...` itself).
    """
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def auth_headers(api_key: str) -> dict[str, str]:
    """Headers every request carries."""
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


def new_idempotency_key() -> str:
    """A fresh key for one logical POST (reused on each of its retries)."""
    return f"fs-{uuid.uuid4().hex}"


# ----- retries ----------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """When to retry a failed attempt and how long to wait first.

    Attributes:
        max_retries: Retries after the first attempt (0 = never retry).
        immediate_first_retry: Retry once at once before backing off (inference clients).
        initial_delay: First backoff delay in seconds; doubles per retry.
        max_delay: Cap on the backoff delay.
        random: Source of jitter in [0, 1); injectable for tests.
        clock: Wall clock (seconds since the epoch) for HTTP-date `Retry-After` values.
    """

    max_retries: int = 3
    immediate_first_retry: bool = False
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    random: Callable[[], float] = field(default=random.random)
    clock: Callable[[], float] = field(default=time.time)

    def should_retry_status(self, status_code: int, headers: Mapping[str, str]) -> bool:
        """Whether a response with this status is worth another attempt.

        The server may steer with `x-should-retry: true|false`; otherwise 408, 409, 429 and
        5xx are retried.
        """
        steer = headers.get("x-should-retry", "").strip().lower()
        if steer == "true":
            return True
        if steer == "false":
            return False
        return status_code in RETRY_STATUSES or status_code >= 500

    def delay(self, retries_done: int, headers: Mapping[str, str] | None = None) -> float:
        """Seconds to wait before retry number `retries_done + 1`.

        A `Retry-After` (or `retry-after-ms`) header wins, capped at 60 s. Otherwise exponential
        backoff from `initial_delay` to `max_delay`, minus up to 25 % jitter; with
        `immediate_first_retry` the first retry waits 0 and backoff starts at the second.
        """
        retry_after = parse_retry_after(headers or {}, self.clock)
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        exponent = retries_done
        if self.immediate_first_retry:
            if retries_done == 0:
                return 0.0
            exponent -= 1
        base = min(self.initial_delay * 2**exponent, self.max_delay)
        return base * (1 - 0.25 * self.random())


def parse_retry_after(
    headers: Mapping[str, str], clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), else None."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - clock(), 0.0)


# ----- errors -----------------------------------------------------------------------------


def error_from_response(
    status_code: int, headers: Mapping[str, str], content: bytes
) -> SignalAPIError:
    """The exception for an error response (status ≥ 400).

    Reads `{"error": {"message", "type", "code", "param"}}`; copes with FastAPI's
    `{"detail": ...}` and with bodies that are not JSON at all (a proxy's HTML page).
    """
    request_id = headers.get("x-request-id")
    error: dict[str, Any] = {}
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message = str(error.get("message") or "")
    elif isinstance(body, dict) and "detail" in body:
        message = _detail_message(body["detail"])
    else:
        message = content.decode("utf-8", "replace").strip()[:500]
    message = message or f"HTTP {status_code} with no error message"
    cls = error_class_for_status(status_code)
    kwargs: dict[str, Any] = dict(
        status_code=status_code,
        request_id=request_id,
        type=error.get("type"),
        code=error.get("code"),
        param=error.get("param"),
    )
    if cls is RateLimitError:
        kwargs["retry_after"] = parse_retry_after(headers)
    return cls(message, **kwargs)


def error_from_event(error: Any) -> SignalAPIError:
    """The exception for `data: {"error": {...}}` received after a stream started."""
    if not isinstance(error, dict):
        return ServerError(f"stream failed: {error!r}")
    message = str(error.get("message") or "stream failed")
    status = error.get("status_code") or error.get("status")
    if isinstance(status, int):
        cls = error_class_for_status(status)
    else:
        cls, status = TYPE_ERRORS.get(str(error.get("type")), ServerError), None
    kwargs: dict[str, Any] = dict(
        status_code=status, type=error.get("type"), code=error.get("code"), param=error.get("param")
    )
    return cls(message, **kwargs)


def _detail_message(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                location = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{location}: {item.get('msg', '')}".strip(": "))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


# ----- server-sent events -----------------------------------------------------------------


class SSEDecoder:
    """Cuts a `text/event-stream` body into JSON payloads, whatever the chunking.

    Feed raw bytes as they arrive; `feed` returns the `data:` payloads of every event completed
    so far, parsed as JSON. `[DONE]` sets `done`; later bytes are ignored. Comments (`:`),
    `event:`/`id:`/`retry:` fields and blank keep-alives are skipped.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._data: list[str] = []
        self.done = False

    def feed(self, chunk: bytes) -> list[Any]:
        """Add bytes; return the payloads of the events they completed."""
        if self.done:
            return []
        self._buffer += self._decoder.decode(chunk)
        events: list[Any] = []
        while not self.done:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, self._buffer = self._buffer[: cut[0]], self._buffer[cut[1] :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[Any]:
        """End of body: the last event, if the server did not end it with a blank line."""
        self._buffer += self._decoder.decode(b"", final=True)
        line, self._buffer = self._buffer.rstrip("\r"), ""
        if self.done:
            return []
        if line:
            self._line(line)
        event = self._line("")
        return [] if event is None else [event]

    def _line(self, line: str) -> Any:
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            if data.strip() == "[DONE]":
                self.done = True
                return None
            try:
                return json.loads(data)
            except ValueError as exc:
                raise ServerError(f"malformed event in stream: {data[:200]!r}") from exc
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def _line_end(text: str) -> tuple[int, int] | None:
    """(end of the first line, start of the next) for \\n, \\r\\n or \\r endings, or None."""
    for index, char in enumerate(text):
        if char == "\n":
            return index, index + 1
        if char == "\r":
            if index + 1 == len(text):
                return None  # maybe the \r of a \r\n split across chunks
            return index, index + (2 if text[index + 1] == "\n" else 1)
    return None
