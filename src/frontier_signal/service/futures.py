"""Futures of the Tinker-style API: every asynchronous operation is a row of the store's
`requests` table, answered later through `retrieve_future`.

`submit` records the request (replaying the original future when its idempotency key, or for
the tinker SDK its `(model, seq_id)`, was seen before), starts the operation as a task and
returns at once. Operations of one model run in order: by `seq_id` when the client sends one
(tinker posts the chunks of one forward_backward in parallel, so chunk 2 may arrive before
chunk 1; operation s waits for s-1, or for `seq_wait_seconds` if s-1 never comes), else in
submission order (hpcai sends operation k+1 only after the POST of k returned). `retrieve`
long-polls: it waits up to `poll_seconds` for the outcome, then says "try again". Outcomes live
in the store, so a poll after a crash gets a clear answer. It knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from frontier_signal.engine.errors import WorkerLost
from frontier_signal.service.errors import InvalidRequest, NotFound, RateLimited, describe
from frontier_signal.service.ledger import RequestLedger
from frontier_signal.service.owners import owner_alive
from frontier_signal.service.requests import fingerprint
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import Request

logger = logging.getLogger(__name__)
KEY_PREFIX = "tinker:"  # keeps these keys apart from the Signal face's Idempotency-Key values


class FutureFailed(Exception):
    """The recorded failure of a future; `message` says what was wrong."""

    def __init__(self, message: str, category: str = "unknown"):
        super().__init__(message)
        self.message = message
        self.category = category  # user | server | unknown (tinker's RequestErrorCategory)


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
        seq_wait_seconds: float = 30.0,
    ):
        self.seq_wait_seconds = seq_wait_seconds
        self._by_seq: dict[tuple[str, int], asyncio.Task] = {}
        self._seq_arrived: dict[tuple[str, int], asyncio.Event] = {}
        self.store = store
        self.ledger = RequestLedger(store)
        self.pruning: asyncio.Task | None = None  # the latest prune (tests await it)
        self.max_in_flight = max_in_flight_per_tenant
        self.poll_seconds = poll_seconds
        self.keep_seconds = keep_seconds
        self.clock = clock
        self._last_prune = clock()
        self._done_events: dict[str, asyncio.Event] = {}
        self._tails: dict[str, asyncio.Task] = {}  # model id → its newest operation
        self._in_flight: Counter[str] = Counter()
        self._kinds: dict[str, str] = {}
        self._cancelled: set[str] = set()
        self._tasks: dict[str, asyncio.Task] = {}

    def submit(
        self,
        tenant_id: str,
        model_id: str | None,
        kind: str,
        body: object,
        idempotency_key: str | None,
        operation: Callable[[], Awaitable[dict]],
        seq_id: int | None = None,
        seq_scope: str | None = None,
    ) -> str:
        """Start `operation` once per idempotency key; returns the future's request id.

        With `model_id`, the operation waits for the model's earlier operations to finish.
        With `seq_id`, `(seq_scope or model_id, seq_id)` is the idempotency key and, for a
        model, the order.
        """
        scope = seq_scope or model_id
        if seq_id is not None and scope:
            idempotency_key = f"seq:{scope}:{seq_id}"
        row, new = self._begin(tenant_id, model_id, kind, body, idempotency_key)
        if not new:
            return row.id
        ordered_by_seq = seq_id is not None and model_id is not None and seq_scope is None
        self._start(row, tenant_id, model_id, operation, seq_id if ordered_by_seq else None)
        return row.id

    def _begin(
        self,
        tenant_id: str,
        model_id: str | None,
        kind: str,
        body: object,
        idempotency_key: str | None,
    ) -> tuple[Request, bool]:
        """Admit the call (the tenant's in-flight limit) and store its row once per key;
        returns (the row, whether it is new). A key reused for another body is a 400."""
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
        if not new and row.fingerprint != print_:
            raise InvalidRequest(
                f"X-Idempotency-Key {idempotency_key!r} was already used for a different "
                f"{row.kind.removeprefix('tinker.')} request; use a new key"
            )
        return row, new

    def _start(
        self,
        row: Request,
        tenant_id: str,
        model_id: str | None,
        operation: Callable[[], Awaitable[dict]],
        seq_id: int | None,
    ) -> None:
        """Run the operation as a task: after the model's previous operation, or (`seq_id`)
        after the model's operation of the seq_id before it."""
        seq = (model_id, seq_id) if model_id is not None and seq_id is not None else None
        previous = self._tails.get(model_id) if model_id and seq is None else None

        async def in_order() -> dict:
            if seq is not None:
                await self._after_predecessor(*seq)
            elif previous is not None:
                with contextlib.suppress(Exception):
                    await previous  # its own failure is recorded on its own future
            return await self._recorded(row.id, lambda: retried_on_worker_loss(operation))

        self._done_events[row.id] = asyncio.Event()
        self._kinds[row.id] = row.kind
        self._in_flight[tenant_id] += 1
        task = asyncio.ensure_future(in_order())
        if seq is not None:
            self._by_seq[seq] = task
            self._seq_arrived.setdefault(seq, asyncio.Event()).set()
            key = seq
            task.add_done_callback(lambda _: self._forget_seq(*key))
        if model_id:
            self._tails[model_id] = task
        self._tasks[row.id] = task
        task.add_done_callback(lambda t: self._finished(row.id, tenant_id, model_id, t))

    async def kind_of(self, request_id: str) -> str | None:
        """The future's kind (`tinker.forward_backward`, `tinker.sample`, ...)."""
        kind = self._kinds.get(request_id)
        if kind is None:
            row = await self.ledger.get(request_id)
            kind = row.kind if row is not None else None
        return kind

    async def cancel(self, tenant_id: str, request_id: str) -> bool:
        """Cancel a sampling future that has not finished (tinker's `cancel_future`); training
        operations are never cancelled half-way. Returns whether it was cancelled."""
        row = await self.ledger.get(request_id)
        if row is None or row.tenant_id != tenant_id or not row.kind.startswith("tinker."):
            raise NotFound(f"no future {request_id!r}: it does not exist or belongs to another key")
        task = self._tasks.get(request_id)
        if row.kind != "tinker.sample" or task is None or task.done():
            return False
        self._cancelled.add(request_id)
        return task.cancel()

    async def _after_predecessor(self, model_id: str, seq_id: int) -> None:
        """Wait until operation `seq_id - 1` of the model (if it is known or arrives in time)
        has finished. Seq 1 follows the model's creation (seq 0), which is already done."""
        key = (model_id, seq_id - 1)
        if seq_id <= 1 or await asyncio.to_thread(self._seq_done, model_id, seq_id - 1):
            return
        arrived = self._seq_arrived.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), self.seq_wait_seconds)
        predecessor = self._by_seq.get(key)
        if predecessor is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(predecessor)

    def skip_seq(self, model_id: str | None, seq_id: int | None) -> None:
        """Operation `seq_id` of the model was refused before it became a future: its
        successor must not wait for it."""
        if model_id is not None and seq_id is not None:
            self._seq_arrived.setdefault((model_id, seq_id), asyncio.Event()).set()

    def _seq_done(self, model_id: str, seq_id: int) -> bool:
        row = self.store.find_request_by_key(KEY_PREFIX + f"seq:{model_id}:{seq_id}")
        return row is not None and row.status != "pending"

    def _forget_seq(self, model_id: str, seq_id: int) -> None:
        self._by_seq.pop((model_id, seq_id), None)
        self._seq_arrived.pop((model_id, seq_id), None)

    def _prune(self) -> None:
        """At most once every tenth of `keep_seconds`: drop results older than that."""
        now = self.clock()
        if now - self._last_prune < self.keep_seconds / 10:
            return
        self._last_prune = now
        self.pruning = asyncio.ensure_future(self._prune_quietly(now - self.keep_seconds))

    async def _prune_quietly(self, finished_before: float) -> int:
        try:
            pruned = await self.ledger.prune("tinker.", finished_before)
        except Exception:  # the store is down: try again at the next interval
            logger.exception("could not prune the futures")
            return 0
        if pruned:
            logger.info("pruned %d finished futures older than %.0f s", pruned, self.keep_seconds)
        return pruned

    async def _recorded(self, request_id: str, operation: Callable[[], Awaitable[dict]]) -> dict:
        """Run the operation and record its outcome (in a worker thread) before the future
        counts as done, so a poll that wakes on it reads the outcome. A cancellation is
        recorded by `_finished`."""
        try:
            result = await operation()
        except Exception as exc:  # a cancellation is recorded by _finished
            status, type_, message, _ = describe(exc)
            if status >= 500:
                logger.error("future %s failed", request_id, exc_info=exc)
            error = {"status": status, "type": type_, "message": message}
            await self.ledger.record(request_id, error=error, finished_at=self.clock())
            raise
        await self.ledger.record(request_id, result=result, finished_at=self.clock())
        return result

    def _finished(
        self, request_id: str, tenant_id: str, model_id: str | None, task: asyncio.Task
    ) -> None:
        self._in_flight[tenant_id] -= 1
        self._tasks.pop(request_id, None)
        self._kinds.pop(request_id, None)
        if model_id and self._tails.get(model_id) is task:
            del self._tails[model_id]
        if task.cancelled():
            if request_id in self._cancelled:
                message, status = "the future was cancelled (cancel_future)", 400
            else:
                message, status = "cancelled at shutdown", 503
            self._cancelled.discard(request_id)
            error = {"status": status, "type": "cancelled", "message": message}
            self.ledger.record_now(request_id, error, finished_at=self.clock())
        else:
            # Its failure is on the ledger already (`_recorded`); taking it here keeps asyncio
            # from logging "Task exception was never retrieved" for every refused request.
            task.exception()
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
        row = await self.ledger.get(request_id)
        if row is None or row.tenant_id != tenant_id or not row.kind.startswith("tinker."):
            raise NotFound(f"no future {request_id!r}: it does not exist or belongs to another key")
        if row.status == "pending" and event is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.poll_seconds)
            row = await self.ledger.get(request_id) or row
        elif row.status == "pending" and owner_alive(row.owner):
            row = await self._poll_elsewhere(row)  # another server process runs it
        if row.status == "done":
            return row.result or {}
        if row.status == "failed":
            error = row.error or {}
            status = int(error.get("status") or 500)
            category = "user" if 400 <= status < 500 else "server"
            raise FutureFailed(error.get("message") or "the operation failed", category)
        if event is None and not owner_alive(row.owner):
            # Pending in the store, its process gone: it was cut off by a restart.
            raise FutureFailed("the operation was interrupted by a server restart; send it again")
        return {"type": "try_again", "request_id": request_id, "queue_state": "active"}

    async def _poll_elsewhere(self, row: Request) -> Request:
        """Poll the store for up to `poll_seconds` while another server process (same
        database) runs the future; the newest row."""
        deadline = time.monotonic() + self.poll_seconds
        delay = 0.02
        while row.status == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            row = await self.ledger.get(row.id) or row
            delay = min(delay * 2, 0.5)
        return row


async def retried_on_worker_loss(operation: Callable[[], Awaitable[dict]], tries: int = 3) -> dict:
    """`operation()`, run again (up to `tries` times, a second apart) when the engine worker
    running it died: a future cannot answer 503 for its client to retry, so the server does
    (the run resumes on a live worker from its newest training checkpoint, engine/pool.py)."""
    for attempt in range(tries):
        try:
            return await operation()
        except WorkerLost:
            if attempt == tries - 1:
                raise
            logger.warning("an engine worker was lost under a future; running it again")
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")
