"""The request log: every mutating call is recorded, applied once per idempotency key, and
counted against its tenant's limit.

A retry that carries the key of a finished request gets the stored result (or error) back; one
whose original is still running waits for that same execution. Work runs as a task, so a client
that disconnects mid-call does not cancel it halfway: it finishes and is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from frontier_signal.service.errors import Conflict, RateLimited, StoredError, describe
from frontier_signal.service.store import Store
from frontier_signal.service.tables import Request

logger = logging.getLogger(__name__)


def fingerprint(kind: str, body: object) -> str:
    text = json.dumps([kind, body], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RequestLog:
    """Records requests in the store and enforces per-tenant in-flight limits."""

    def __init__(self, store: Store, max_in_flight_per_tenant: int):
        self.store = store
        self.max_in_flight = max_in_flight_per_tenant
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
        row = Request(
            id=request_id,
            tenant_id=tenant_id,
            run_id=run_id,
            kind=kind,
            status="pending",
            idempotency_key=idempotency_key,
            fingerprint=fingerprint(kind, body),
            created_at=time.time(),
        )
        row, new = self.store.begin_request(row)
        if not new:
            return await self._replay(row, fingerprint(kind, body))
        task = asyncio.ensure_future(operation())
        self._tasks[row.id] = task
        self._in_flight[tenant_id] += 1
        task.add_done_callback(lambda t: self._finished(row.id, tenant_id, t))
        return await asyncio.shield(task)

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
        raise Conflict(
            "a request with this Idempotency-Key is still running in another server process",
            headers={"Retry-After": "1"},
        )

    def _finished(self, request_id: str, tenant_id: str, task: asyncio.Task) -> None:
        self._in_flight[tenant_id] -= 1
        self._tasks.pop(request_id, None)
        try:
            if task.cancelled():
                self.store.finish_request(
                    request_id,
                    error={"status": 503, "type": "cancelled", "message": "cancelled at shutdown"},
                )
            elif task.exception() is not None:
                status, type_, message, _ = describe(task.exception())
                if status in (429, 503):  # not applied, and worth retrying: forget the key
                    self.store.delete_request(request_id)
                    return
                if status >= 500 and not isinstance(task.exception(), StoredError):
                    logger.error("request %s failed", request_id, exc_info=task.exception())
                self.store.finish_request(
                    request_id, error={"status": status, "type": type_, "message": message}
                )
            else:
                self.store.finish_request(request_id, result=_jsonable(task.result()))
        except Exception:  # the store is down: the request already answered; keep serving
            logger.exception("could not record the outcome of request %s", request_id)


def _jsonable(result: object) -> dict | None:
    return result if isinstance(result, dict) else None
