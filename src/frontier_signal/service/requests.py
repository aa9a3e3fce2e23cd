"""The request log: every mutating call is recorded, applied once per idempotency key, and
counted against its tenant's limit.

A retry that carries the key of a finished request gets the stored result (or error) back; one
whose original is still running waits for that same execution. Work runs as a task, so a client
that disconnects mid-call does not cancel it halfway: it finishes and is recorded.

Finished requests are kept `keep_seconds` (the server's `request_retention_hours`), then pruned:
a retry after that runs afresh. The Tinker face's futures share the table and prune their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from frontier_signal.service.errors import Conflict, RateLimited, StoredError, describe
from frontier_signal.service.store import Store
from frontier_signal.service.tables import Request

logger = logging.getLogger(__name__)

# The Tinker face's futures (service/futures.py) live in the same table with kinds "tinker.*";
# they are pruned by FutureService, never here.
TINKER_KIND_PREFIX = "tinker."


def fingerprint(kind: str, body: object) -> str:
    text = json.dumps([kind, body], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RequestLog:
    """Records requests in the store and enforces per-tenant in-flight limits.

    Args:
        store: where requests and their outcomes are recorded.
        max_in_flight_per_tenant: unfinished requests one tenant may have (429 above it).
        keep_seconds: how long a finished request's outcome (and its idempotency key) is kept;
            older ones are pruned, in a worker thread, as new requests come in.
        clock: the time source (injectable for tests).
        wait_elsewhere_seconds: how long a replay of a request that another server process
            (same database) is still running waits for its outcome before answering 409.
    """

    def __init__(
        self,
        store: Store,
        max_in_flight_per_tenant: int,
        keep_seconds: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
        wait_elsewhere_seconds: float = 30.0,
    ):
        self.store = store
        self.max_in_flight = max_in_flight_per_tenant
        self.keep_seconds = keep_seconds
        self.clock = clock
        self.wait_elsewhere_seconds = wait_elsewhere_seconds
        self._last_prune = -math.inf  # the first request prunes what an earlier process left
        self.pruning: asyncio.Task | None = None  # the latest prune (tests await it)
        self._tasks: dict[str, asyncio.Task] = {}
        self._in_flight: Counter[str] = Counter()

    def in_flight(self, tenant_id: str) -> int:
        return self._in_flight[tenant_id]

    def admit(self, tenant_id: str) -> None:
        if self._in_flight[tenant_id] >= self.max_in_flight:
            raise RateLimited(
                f"this key has {self._in_flight[tenant_id]} requests in flight (the limit is "
                f"{self.max_in_flight}); retry after the earlier ones finish",
                retry_after=1,
            )

    @contextlib.contextmanager
    def counted(self, tenant_id: str) -> Iterator[None]:
        """Count a read (sampling, embeddings) against the tenant's limit, without recording it."""
        self.admit(tenant_id)
        self._in_flight[tenant_id] += 1
        try:
            yield
        finally:
            self._in_flight[tenant_id] -= 1

    async def run(
        self,
        request_id: str,
        tenant_id: str,
        run_id: str | None,
        kind: str,
        body: object,
        idempotency_key: str | None,
        operation: Callable[[], Awaitable[dict]],
    ) -> dict:
        """Execute `operation` once for this (tenant, idempotency key) and record the outcome."""
        self.admit(tenant_id)
        self._maybe_prune()
        row = Request(
            id=request_id,
            tenant_id=tenant_id,
            run_id=run_id,
            kind=kind,
            status="pending",
            idempotency_key=idempotency_key,
            fingerprint=fingerprint(kind, body),
            created_at=self.clock(),
        )
        row, new = self.store.begin_request(row)
        if not new:
            return await self._replay(row, fingerprint(kind, body))
        task = asyncio.ensure_future(operation())
        self._tasks[row.id] = task
        self._in_flight[tenant_id] += 1
        task.add_done_callback(lambda t: self._finished(row.id, tenant_id, t))
        return await asyncio.shield(task)

    def _maybe_prune(self) -> None:
        """At most once every tenth of `keep_seconds`, and one at a time: start a prune in a
        worker thread; the request that triggers it does not wait for it."""
        now = self.clock()
        if now - self._last_prune < self.keep_seconds / 10:
            return
        if self.pruning is not None and not self.pruning.done():
            return
        self._last_prune = now
        self.pruning = asyncio.ensure_future(self._prune_quietly(now))

    async def _prune_quietly(self, now: float) -> int:
        try:
            return await self.prune(now)
        except Exception:  # the store is down: try again at the next interval
            logger.exception("could not prune the request log")
            return 0

    async def prune(self, now: float | None = None) -> int:
        """Delete the Signal requests that finished more than `keep_seconds` before `now`
        (default: the clock), in a worker thread. Pending ones always stay. Returns the count."""
        now = self.clock() if now is None else now
        pruned = await asyncio.to_thread(
            self.store.prune_requests,
            "",
            now - self.keep_seconds,
            except_prefix=TINKER_KIND_PREFIX,
        )
        if pruned:
            logger.info("pruned %d finished requests older than %.0f s", pruned, self.keep_seconds)
        return pruned

    async def close(self) -> None:
        """Wait for a prune in progress (before the store closes)."""
        if self.pruning is not None:
            await asyncio.wait([self.pruning])

    async def _replay(self, row: Request, print_: str) -> dict:
        if row.fingerprint != print_:
            raise Conflict(
                f"Idempotency-Key {row.idempotency_key!r} was already used for a different "
                f"{row.kind} request; use a new key for a new request",
                headers={"x-should-retry": "false"},
            )
        if row.status == "done":
            return row.result or {}
        if row.status == "failed":
            error = row.error or {}
            raise StoredError(
                error.get("status", 500), error.get("type", ""), error.get("message", "")
            )
        task = self._tasks.get(row.id)
        if task is not None:
            return await asyncio.shield(task)
        finished = await self._wait_elsewhere(row.id)
        if finished is not None:
            return await self._replay(finished, print_)
        raise Conflict(
            "a request with this Idempotency-Key is still running in another server process",
            headers={"Retry-After": "1"},
        )

    async def _wait_elsewhere(self, request_id: str) -> Request | None:
        """The row of a request that another server process (same database) is running, once
        it has finished there: polled for up to `wait_elsewhere_seconds`; None if it has not.
        A row that disappears was refused there (429/503) or forgotten: None as well."""
        deadline = time.monotonic() + self.wait_elsewhere_seconds
        delay = 0.02
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            row = await asyncio.to_thread(self.store.get_request, request_id)
            if row is None:
                return None
            if row.status != "pending":
                return row
            delay = min(delay * 2, 0.5)
        return None

    def _finished(self, request_id: str, tenant_id: str, task: asyncio.Task) -> None:
        self._in_flight[tenant_id] -= 1
        self._tasks.pop(request_id, None)
        try:
            if task.cancelled():
                self.store.finish_request(
                    request_id,
                    error={"status": 503, "type": "cancelled", "message": "cancelled at shutdown"},
                    finished_at=self.clock(),
                )
            elif task.exception() is not None:
                status, type_, message, _ = describe(task.exception())
                if status in (429, 503):  # not applied, and worth retrying: forget the key
                    self.store.delete_request(request_id)
                    return
                if status >= 500 and not isinstance(task.exception(), StoredError):
                    logger.error("request %s failed", request_id, exc_info=task.exception())
                self.store.finish_request(
                    request_id,
                    error={"status": status, "type": type_, "message": message},
                    finished_at=self.clock(),
                )
            else:
                self.store.finish_request(
                    request_id, result=_jsonable(task.result()), finished_at=self.clock()
                )
        except Exception:  # the store is down: the request already answered; keep serving
            logger.exception("could not record the outcome of request %s", request_id)


def _jsonable(result: object) -> dict | None:
    return result if isinstance(result, dict) else None
