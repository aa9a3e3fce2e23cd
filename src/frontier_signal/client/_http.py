"""Sending requests: the retry loop over httpx, once sync and once async.

The two transports are line-for-line twins; every decision they make (headers, whether to
retry, how long to wait, which exception to raise, how to cut SSE) is a call into `_core`.
Each transport either owns its `httpx.Client` or borrows one (a derived client sharing its
parent's connection pool) and closes only what it owns. `sleep` is injectable so tests never
wait in real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import httpx

from ._calls import Call
from ._core import (
    RetryPolicy,
    SSEDecoder,
    auth_headers,
    error_from_event,
    error_from_response,
    new_idempotency_key,
)
from .errors import APIConnectionError, APITimeoutError, ServerError, SignalAPIError

CONNECT_TIMEOUT = 10.0


def make_timeout(timeout: float) -> httpx.Timeout:
    """Per-request timeout: `timeout` for reading, at most 10 s to connect."""
    return httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))


class _TransportBase:
    """What both transports share: building requests and mapping failures."""

    def __init__(self, *, api_key: str, base_url: str, timeout: float, retry: RetryPolicy) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self.retry = retry

    def _headers(self, call: Call, stream: bool) -> dict[str, str]:
        headers = auth_headers(self.api_key)
        if call.method == "POST":
            # One key per logical call: the retries below resend this very request.
            headers["Idempotency-Key"] = new_idempotency_key()
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    def _no_answer(self, exc: httpx.TransportError, request: httpx.Request) -> SignalAPIError:
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                f"no answer from {request.method} {request.url} within {self.timeout} s ({exc!r})"
            )
        return APIConnectionError(f"could not reach {request.url}: {exc!r}")

    def _retry_or_raise(
        self, retries_done: int, error: SignalAPIError, headers: Mapping[str, str] | None
    ) -> float:
        """The delay before the next attempt, or raise `error` when no retry is left."""
        if retries_done >= self.retry.max_retries:
            raise error
        return self.retry.delay(retries_done, headers)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServerError(
            f"expected JSON from {response.request.url}, got {response.text[:200]!r}",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from None


def _checked_event(event: Any) -> Any:
    if isinstance(event, dict) and "error" in event:
        raise error_from_event(event["error"])
    return event


class SyncTransport(_TransportBase):
    """Sends `Call`s with retries over a (possibly borrowed) `httpx.Client`."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float,
        retry: RetryPolicy,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(api_key=api_key, base_url=base_url, timeout=timeout, retry=retry)
        self.owns_http_client = http_client is None
        self.http_client = http_client if http_client is not None else httpx.Client()
        self.sleep = sleep or time.sleep

    def request(self, call: Call) -> Any:
        """Send `call`; return the parsed JSON body of the 2xx answer."""
        response = self._send(call, stream=False)
        return _json(response)

    def stream(self, call: Call) -> Iterator[Any]:
        """Send `call` and yield the JSON payload of each server-sent event."""
        response = self._send(call, stream=True)
        decoder = SSEDecoder()
        try:
            for chunk in response.iter_bytes():
                for event in decoder.feed(chunk):
                    yield _checked_event(event)
                if decoder.done:
                    return
            for event in decoder.flush():
                yield _checked_event(event)
        except httpx.TransportError as exc:
            raise self._no_answer(exc, response.request) from exc
        finally:
            response.close()

    def _send(self, call: Call, stream: bool) -> httpx.Response:
        request = self.http_client.build_request(
            call.method,
            self.base_url + call.path,
            json=call.json,
            headers=self._headers(call, stream),
            timeout=make_timeout(self.timeout),
        )
        retries_done = 0
        while True:
            try:
                response = self.http_client.send(request, stream=True)
                if not stream or not response.is_success:
                    response.read()
            except httpx.TransportError as exc:
                delay = self._retry_or_raise(retries_done, self._no_answer(exc, request), None)
            else:
                if response.is_success:
                    return response
                error = error_from_response(
                    response.status_code, response.headers, response.content
                )
                if not self.retry.should_retry_status(response.status_code, response.headers):
                    raise error
                delay = self._retry_or_raise(retries_done, error, response.headers)
            self.sleep(delay)
            retries_done += 1

    def close(self) -> None:
        """Close the connection pool if this transport owns it."""
        if self.owns_http_client:
            self.http_client.close()


class AsyncTransport(_TransportBase):
    """Sends `Call`s with retries over a (possibly borrowed) `httpx.AsyncClient`."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float,
        retry: RetryPolicy,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(api_key=api_key, base_url=base_url, timeout=timeout, retry=retry)
        self.owns_http_client = http_client is None
        self.http_client = http_client if http_client is not None else httpx.AsyncClient()
        self.sleep = sleep or asyncio.sleep

    async def request(self, call: Call) -> Any:
        """Send `call`; return the parsed JSON body of the 2xx answer."""
        response = await self._send(call, stream=False)
        return _json(response)

    async def stream(self, call: Call) -> AsyncIterator[Any]:
        """Send `call` and yield the JSON payload of each server-sent event."""
        response = await self._send(call, stream=True)
        decoder = SSEDecoder()
        try:
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    yield _checked_event(event)
                if decoder.done:
                    return
            for event in decoder.flush():
                yield _checked_event(event)
        except httpx.TransportError as exc:
            raise self._no_answer(exc, response.request) from exc
        finally:
            await response.aclose()

    async def _send(self, call: Call, stream: bool) -> httpx.Response:
        request = self.http_client.build_request(
            call.method,
            self.base_url + call.path,
            json=call.json,
            headers=self._headers(call, stream),
            timeout=make_timeout(self.timeout),
        )
        retries_done = 0
        while True:
            try:
                response = await self.http_client.send(request, stream=True)
                if not stream or not response.is_success:
                    await response.aread()
            except httpx.TransportError as exc:
                delay = self._retry_or_raise(retries_done, self._no_answer(exc, request), None)
            else:
                if response.is_success:
                    return response
                error = error_from_response(
                    response.status_code, response.headers, response.content
                )
                if not self.retry.should_retry_status(response.status_code, response.headers):
                    raise error
                delay = self._retry_or_raise(retries_done, error, response.headers)
            await self.sleep(delay)
            retries_done += 1

    async def aclose(self) -> None:
        """Close the connection pool if this transport owns it."""
        if self.owns_http_client:
            await self.http_client.aclose()
