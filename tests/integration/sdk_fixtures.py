"""Helpers for driving the real SDK against a live server: readiness, one torch thread, the wire.

`Wire` / `AsyncWire` are the real httpx transports with two additions a test needs: they record
every request sent, and they can lose the answer of a chosen request *after the server handled
it* (as a dropped connection would), so that the SDK's retry meets the server's idempotency.
"""

from __future__ import annotations

import time

import httpx
import pytest


def wait_ready(base_url: str) -> None:
    for _ in range(600):  # bounded: 60 s
        if httpx.get(base_url + "/ready", timeout=10).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("server never became ready")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The in-process server computes on one thread: on a shared 2-core machine torch's default
    thread pool oversubscribes the CPU and a tiny-model step takes seconds instead of ~30 ms."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_url(one_torch_thread, server) -> str:
    wait_ready(server.base_url)
    return server.base_url


def _lost(request: httpx.Request) -> httpx.ReadError:
    return httpx.ReadError("connection reset after the server answered", request=request)


class Wire(httpx.BaseTransport):
    """`httpx.HTTPTransport`, recording requests; `lose_next(suffix)` drops one answer."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []
        self.to_lose: list[str] = []

    def lose_next(self, path_suffix: str) -> None:
        self.to_lose.append(path_suffix)

    def posts(self, path_suffix: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path.endswith(path_suffix)]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.inner.handle_request(request)
        for suffix in self.to_lose:
            if request.url.path.endswith(suffix):
                self.to_lose.remove(suffix)
                response.read()
                response.close()
                raise _lost(request)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncWire(httpx.AsyncBaseTransport):
    """The async twin of `Wire`; also tracks the most requests in flight at once (`peak`)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []
        self.to_lose: list[str] = []
        self.in_flight = 0
        self.peak = 0

    def lose_next(self, path_suffix: str) -> None:
        self.to_lose.append(path_suffix)

    def posts(self, path_suffix: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path.endswith(path_suffix)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            # The server answers a sample when it is done: the headers mark its end.
            response = await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1
        for suffix in self.to_lose:
            if request.url.path.endswith(suffix):
                self.to_lose.remove(suffix)
                await response.aread()
                await response.aclose()
                raise _lost(request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
