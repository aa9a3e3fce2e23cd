"""Futures of the Tinker-style API: every asynchronous operation is a row of the store's
`requests` table, answered later through `retrieve_future`.

`submit` records the request (replaying the original future when its idempotency key was seen
before), starts the operation as a task and returns at once. Operations of one model run in
submission order (the client sends operation k+1 only after the POST of k returned, so the
order of `submit` calls is the user's order). `retrieve` long-polls: it waits up to
`poll_seconds` for the outcome, then says "try again". Outcomes live in the store, so a poll
after a crash gets a clear answer. It knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from frontier_signal.service.errors import InvalidRequest, NotFound, RateLimited, describe
from frontier_signal.service.requests import fingerprint
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import Request

logger = logging.getLogger(__name__)
KEY_PREFIX = "tinker:"  # keeps these keys apart from the Signal face's Idempotency-Key values


class FutureFailed(Exception):
    """The recorded failure of a future; `message` says what was wrong."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class FutureService:
    """Futures on top of the store.

    Args:
        store: where requests and their outcomes are recorded.
        max_in_flight_per_tenant: unfinished futures one tenant may have (429 above it).
        poll_seconds: how long `retrieve` holds a poll open (hpcai times out at 45 s).
        keep_seconds: how long a finished future's result stays retrievable (and its
            idempotency key remembered); older ones are pruned as new futures come in.
        clock: the time source (injectable for tests).
    """

    def __init__(
        self,
        store: Store,
        max_in_flight_per_tenant: int,
        poll_seconds: float = 30.0,
        keep_seconds: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.max_in_flight = max_in_flight_per_tenant
        self.poll_seconds = poll_seconds
        self.keep_seconds = keep_seconds
        self.clock = clock
        self._last_prune = clock()
        self._done_events: dict[str, asyncio.Event] = {}
        self._tails: dict[str, asyncio.Task] = {}  # model id → its newest operation
        self._in_flight: Counter[str] = Counter()

    def submit(
        self,
        tenant_id: str,
        model_id: str | None,
        kind: str,
        body: object,
        idempotency_key: str | None,
        operation: Callable[[], Awaitable[dict]],
    ) -> str:
        """Start `operation` once per idempotency key; returns the future's request id.

        With `model_id`, the operation waits for the model's earlier operations to finish.
        """
        if self._in_flight[tenant_id] >= self.max_in_flight:
            raise RateLimited(
                f"this key has {self._in_flight[tenant_id]} operations in flight (the limit is "
                f"{self.max_in_flight}); retry after the earlier ones finish"
            )
        self._prune()
        print_ = fingerprint(kind, body)
        row = Request(
            id=new_id("fut"),
            tenant_id=tenant_id,
            run_id=model_id,
            kind=f"tinker.{kind}",
            status="pending",
            idempotency_key=KEY_PREFIX + idempotency_key if idempotency_key else None,
            fingerprint=print_,
            created_at=self.clock(),
        )
        row, new = self.store.begin_request(row)
        if not new:
            if row.fingerprint != print_:
                raise InvalidRequest(
                    f"X-Idempotency-Key {idempotency_key!r} was already used for a different "
                    f"{row.kind.removeprefix('tinker.')} request; use a new key"
                )
            return row.id
        previous = self._tails.get(model_id) if model_id else None

        async def in_order() -> dict:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous  # its own failure is recorded on its own future
            return await operation()

        self._done_events[row.id] = asyncio.Event()
        self._in_flight[tenant_id] += 1
        task = asyncio.ensure_future(in_order())
        if model_id:
            self._tails[model_id] = task
        task.add_done_callback(lambda t: self._finished(row.id, tenant_id, model_id, t))
        return row.id

    def _prune(self) -> None:
        """At most once every tenth of `keep_seconds`: drop results older than that."""
        now = self.clock()
        if now - self._last_prune < self.keep_seconds / 10:
            return
        self._last_prune = now
        pruned = self.store.prune_requests("tinker.", now - self.keep_seconds)
        if pruned:
            logger.info("pruned %d finished futures older than %.0f s", pruned, self.keep_seconds)

    def _finished(
        self, request_id: str, tenant_id: str, model_id: str | None, task: asyncio.Task
    ) -> None:
        self._in_flight[tenant_id] -= 1
        if model_id and self._tails.get(model_id) is task:
            del self._tails[model_id]
        try:
            if task.cancelled():
                error = {"status": 503, "type": "cancelled", "message": "cancelled at shutdown"}
                self.store.finish_request(request_id, error=error)
            elif task.exception() is not None:
                exc = task.exception()
                status, type_, message, _ = describe(exc)
                if status >= 500:
                    logger.error("future %s failed", request_id, exc_info=exc)
                error = {"status": status, "type": type_, "message": message}
                self.store.finish_request(request_id, error=error)
            else:
                self.store.finish_request(request_id, result=task.result())
        except Exception:  # the store is down: keep serving; the poll will say so
            logger.exception("could not record the outcome of future %s", request_id)
        event = self._done_events.pop(request_id, None)
        if event is not None:
            event.set()

    async def retrieve(self, tenant_id: str, request_id: str) -> dict:
        """The future's result, or `{"type": "try_again", ...}` while it is still running.

        Raises:
            NotFound: no such future for this tenant.
            FutureFailed: the operation failed (the message says why).
        """
        event = self._done_events.get(request_id)
        row = self.store.get_request(request_id)
        if row is None or row.tenant_id != tenant_id or not row.kind.startswith("tinker."):
            raise NotFound(f"no future {request_id!r}: it does not exist or belongs to another key")
        if row.status == "pending" and event is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.poll_seconds)
            row = self.store.get_request(request_id) or row
        if row.status == "done":
            return row.result or {}
        if row.status == "failed":
            raise FutureFailed((row.error or {}).get("message") or "the operation failed")
        if event is None and request_id not in self._done_events:
            # Pending in the store but unknown to this process: it was cut off by a restart.
            raise FutureFailed("the operation was interrupted by a server restart; send it again")
        return {"type": "try_again", "request_id": request_id, "queue_state": "active"}
