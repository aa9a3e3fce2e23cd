"""Model warmup: ask the server to load a model, poll until it is ready, remember success.

The server contract (`docs/openai-api.md`): `POST /v1/warmup {"model"}` and `GET
/v1/warmup/{model}` answer `{"model", "status": "loading" | "ready" | "error", "detail"}` (a
poll may also say `not_loaded` when the server no longer knows the request, e.g. after a
restart: then the model is asked for again with a `POST`); the model name may
be a base model, a run id, `<run>:<checkpoint>` or `<run>@<step>` (slashes and colons kept in
the path). Warmup is advisory: every failure becomes `False` plus a log line, never an
exception. A success is remembered for 10 minutes per (server root, model) in a per-process
`WarmupCache`, whose clock, like the polling's `sleep`, can be injected so tests never wait.
Requests go through the official `openai` client's low-level `post` / `get`, so they share
its auth, timeout and retry settings.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import openai

from .config import LMConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

WARMUP_TTL_SECONDS = 600.0
POLL_INTERVAL_SECONDS = 1.0


class WarmupCache:
    """Which (server root, model) pairs were warm recently; entries expire after `ttl` seconds.

    Args:
        ttl: Seconds a success stays valid (default 10 minutes).
        clock: Monotonic clock in seconds; injectable for tests.
    """

    def __init__(
        self, ttl: float = WARMUP_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._warm_at: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def is_warm(self, server: str, model: str) -> bool:
        """Whether `model` on `server` was warmed less than `ttl` seconds ago."""
        with self._lock:
            warm_at = self._warm_at.get((server, model))
            if warm_at is None:
                return False
            if self._clock() - warm_at >= self.ttl:
                del self._warm_at[(server, model)]
                return False
            return True

    def mark_warm(self, server: str, model: str) -> None:
        """Remember that `model` on `server` is warm as of now."""
        with self._lock:
            self._warm_at[(server, model)] = self._clock()

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._warm_at.clear()


DEFAULT_WARMUP_CACHE = WarmupCache()
"""The per-process cache `warmup_model` and the providers use unless given another."""


def warmup_path(model: str) -> str:
    """`warmup/<model>` with the name escaped but its `/`, `:` and `@` kept (a path route)."""
    return "/warmup/" + quote(model, safe="/:@")


def _status(body: Any) -> tuple[str, str]:
    """(status, detail) from a warmup answer; anything unexpected counts as an error."""
    if not isinstance(body, dict):
        return "error", f"unexpected warmup answer {body!r}"
    status = body.get("status")
    detail = str(body.get("detail") or "")
    if status in ("loading", "ready", "error", "not_loaded"):
        return status, detail
    return "error", f"unexpected warmup status {status!r} {detail}".strip()


def _give_up(model: str, reason: str) -> bool:
    log.warning("warmup of %s failed: %s", model, reason)
    return False


async def warmup_with_client(
    client: openai.AsyncOpenAI,
    model: str,
    *,
    server: str,
    max_attempts: int = 30,
    force: bool = False,
    cache: WarmupCache | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
    poll_interval: float = POLL_INTERVAL_SECONDS,
) -> bool:
    """Warm `model` through an `AsyncOpenAI` client whose base URL is the server's `/v1`.

    Args:
        client: The client (its key, timeout and retries are used).
        model: Base model, run id or run checkpoint.
        server: The server root, the cache's key.
        max_attempts: Requests in all: the `POST`, then one `GET` per `poll_interval`.
        force: Skip the cache and ask the server.
        cache: Default `DEFAULT_WARMUP_CACHE`.
        sleep: Default `asyncio.sleep`.
        poll_interval: Seconds between polls.

    Returns:
        True when the server says `ready`; False on `error`, on any request failure, or when
        the model is still loading after `max_attempts`.
    """
    cache = DEFAULT_WARMUP_CACHE if cache is None else cache
    sleep = asyncio.sleep if sleep is None else sleep
    if not force and cache.is_warm(server, model):
        return True
    try:
        body = await client.post("/warmup", body={"model": model}, cast_to=object)
        for attempt in range(1, max(max_attempts, 1) + 1):
            status, detail = _status(body)
            if status == "ready":
                cache.mark_warm(server, model)
                return True
            if status == "error":
                return _give_up(model, detail or "the server reported an error")
            if attempt >= max_attempts:
                break
            await sleep(poll_interval)
            if status == "not_loaded":  # the server forgot our request (it restarted): ask again
                body = await client.post("/warmup", body={"model": model}, cast_to=object)
            else:
                body = await client.get(warmup_path(model), cast_to=object)
    except openai.OpenAIError as exc:
        return _give_up(model, f"{type(exc).__name__}: {exc}")
    return _give_up(model, f"still loading after {max_attempts} attempts")


def warmup_with_sync_client(
    client: openai.OpenAI,
    model: str,
    *,
    server: str,
    max_attempts: int = 30,
    force: bool = False,
    cache: WarmupCache | None = None,
    sleep: Callable[[float], Any] | None = None,
    poll_interval: float = POLL_INTERVAL_SECONDS,
) -> bool:
    """The blocking twin of `warmup_with_client` (same arguments, an `openai.OpenAI` client)."""
    cache = DEFAULT_WARMUP_CACHE if cache is None else cache
    sleep = time.sleep if sleep is None else sleep
    if not force and cache.is_warm(server, model):
        return True
    try:
        body = client.post("/warmup", body={"model": model}, cast_to=object)
        for attempt in range(1, max(max_attempts, 1) + 1):
            status, detail = _status(body)
            if status == "ready":
                cache.mark_warm(server, model)
                return True
            if status == "error":
                return _give_up(model, detail or "the server reported an error")
            if attempt >= max_attempts:
                break
            sleep(poll_interval)
            if status == "not_loaded":
                body = client.post("/warmup", body={"model": model}, cast_to=object)
            else:
                body = client.get(warmup_path(model), cast_to=object)
    except openai.OpenAIError as exc:
        return _give_up(model, f"{type(exc).__name__}: {exc}")
    return _give_up(model, f"still loading after {max_attempts} attempts")


async def warmup_model(
    model_name: str,
    config: LMConfig | None = None,
    max_attempts: int = 30,
    force: bool = False,
    *,
    cache: WarmupCache | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
    http_client: Any = None,
) -> bool:
    """Warm a model on a Frontier Signal server (the seed's `warmup_synth_model`).

    Args:
        model_name: Base model, run id, `<run>:<checkpoint>` or `<run>@<step>`.
        config: Where to connect; default `LMConfig.from_env()` (the `signal` provider).
        max_attempts: Requests in all, one a second (the `POST`, then polls).
        force: Ask the server even if the model was warmed in the last 10 minutes.
        cache: Default the per-process cache.
        sleep: Default `asyncio.sleep`; tests pass a fake.
        http_client: An `httpx` / `httpx2` async client for the `openai` client (tests).

    Returns:
        True when the model is ready; False otherwise, the reason logged as a warning (a
        missing configuration included: it never raises).
    """
    if config is None:
        try:
            config = LMConfig.from_env()
        except ConfigError as exc:
            return _give_up(model_name, str(exc))
    async with openai.AsyncOpenAI(
        base_url=config.api_url,
        api_key=config.api_key,
        timeout=config.timeout,
        max_retries=config.max_retries,
        http_client=http_client,
    ) as client:
        return await warmup_with_client(
            client,
            model_name,
            server=config.server_root,
            max_attempts=max_attempts,
            force=force,
            cache=cache,
            sleep=sleep,
        )
