"""The request ledger: the `requests` table that records Signal requests (service/requests.py)
and Tinker futures (service/futures.py) alike — begin once per idempotency key, record the
outcome, wait for one that another server process is running, prune old outcomes.

Every store call here runs in a worker thread (`asyncio.to_thread`), so a slow database
(PostgreSQL over a network) never stalls the event loop; the one exception is `record_now`,
for a task cancelled at shutdown, when the loop may not run a thread's completion any more.
It knows nothing of HTTP, limits or ordering: those belong to its two users.
"""

from __future__ import annotations

import asyncio
import logging
import time

from frontier_signal.service.store import Store
from frontier_signal.service.tables import Request

logger = logging.getLogger(__name__)


class RequestLedger:
    """The requests table, off the event loop."""

    def __init__(self, store: Store):
        self.store = store

    async def begin(self, row: Request) -> tuple[Request, bool]:
        """Record `row`, or return the row that already holds its idempotency key (in this
        process or another): (the row, True when it is new)."""
        return await asyncio.to_thread(self.store.begin_request, row)

    async def get(self, request_id: str) -> Request | None:
        return await asyncio.to_thread(self.store.get_request, request_id)

    async def record(
        self,
        request_id: str,
        *,
        result: dict | None = None,
        error: dict | None = None,
        finished_at: float | None = None,
        forget: bool = False,
    ) -> None:
        """Record an outcome (or, with `forget`, drop the request: it was not applied and a
        retry with its key should run afresh). A store that is down is logged, not raised:
        the caller has its answer already."""
        try:
            await asyncio.to_thread(self._write, request_id, result, error, finished_at, forget)
        except Exception:
            logger.exception("could not record the outcome of request %s", request_id)

    def record_now(self, request_id: str, error: dict, finished_at: float | None = None) -> None:
        """`record`, on the calling thread (a task cancelled at shutdown)."""
        try:
            self._write(request_id, None, error, finished_at, False)
        except Exception:
            logger.exception("could not record the outcome of request %s", request_id)

    def _write(
        self,
        request_id: str,
        result: dict | None,
        error: dict | None,
        finished_at: float | None,
        forget: bool,
    ) -> None:
        if forget:
            self.store.delete_request(request_id)
        else:
            self.store.finish_request(request_id, result, error, finished_at)

    async def wait_elsewhere(self, request_id: str, seconds: float) -> Request | None:
        """The row of a request another server process (same database) is running, polled for
        up to `seconds` until it has finished; None if it has not, or if the row disappeared
        (refused there and forgotten: a retry runs afresh)."""
        deadline = time.monotonic() + seconds
        delay = 0.02
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            row = await self.get(request_id)
            if row is None:
                return None
            if row.status != "pending":
                return row
            delay = min(delay * 2, 0.5)
        return None

    async def prune(
        self, kind_prefix: str, finished_before: float, except_prefix: str | None = None
    ) -> int:
        """Delete finished requests of kinds starting with `kind_prefix` (but not
        `except_prefix`) that finished before `finished_before`; pending ones stay."""
        return await asyncio.to_thread(
            self.store.prune_requests, kind_prefix, finished_before, except_prefix=except_prefix
        )
