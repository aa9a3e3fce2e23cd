"""The scheduler: one thread owns the engine; everything else enqueues work and waits on a future.

Ordering and batching rules (DESIGN.md, contract notes "Scheduling"):
- Work carries an ordering key (a run id, or "" for none). Work of one key runs in arrival order,
  except that reads (samples) may overtake other reads.
- Runnable forward_backward work of different runs on the same base model runs as one mixed batch
  (at most one per run per batch); runnable samples on one base model batch together.
- Samples go first when they can, so short sampling calls do not wait behind a training queue,
  but a batch of samples is always followed by other waiting work, so training is never starved.
- A sample that finds the engine idle waits up to `sample_gather_s` (20 ms) for more samples while
  they keep arriving, capped at `sample_gather_cap_s` (100 ms): a burst of concurrent requests
  (each parsed, authenticated and tokenized one after another on the event loop) then decodes
  as one batch instead of one alone and the rest behind it (bench/serving.py: 8 concurrent
  requests on 8 runs went from 2.4-2.9x to 4.1x faster than one after another; a lone request
  pays the 20 ms).
- Anything else (create, optim_step, checkpoints, loads) is a `call`: it runs alone, a barrier for
  its key only.

When a batch fails, each of its items is retried alone, so one bad request fails only itself.
The scheduler knows nothing about HTTP, tenants or the store.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from frontier_signal.engine.engine import Engine
from frontier_signal.engine.types import ForwardBackwardRequest, SampleRequest, TokenCallback

logger = logging.getLogger(__name__)


class SchedulerStopped(RuntimeError):
    """The scheduler is shutting down and no longer takes or finishes work."""


@dataclass
class Work:
    kind: str  # "forward_backward" | "sample" | "call"
    key: str
    base_model: str
    prepare: Callable[[Engine], Any]  # in the engine thread: → request(s), or the call's result
    future: Future = field(default_factory=Future)
    on_token: TokenCallback | None = None
    seq: int = 0
    submitted: float = field(default_factory=time.monotonic)


class Scheduler:
    """Owns an `Engine` on a dedicated thread.

    Args:
        engine: the engine; no other thread may touch it once `start` is called.
        max_sample_rows: most sequences decoded together in one batch.
        sample_gather_s: how long a sample batch waits for the next sample to arrive (0: never).
        sample_gather_cap_s: the longest a sample batch waits in all.
    """

    def __init__(
        self,
        engine: Engine,
        max_sample_rows: int = 32,
        sample_gather_s: float = 0.02,
        sample_gather_cap_s: float = 0.1,
    ):
        self.engine = engine
        self.max_sample_rows = max_sample_rows
        self.sample_gather_s = sample_gather_s
        self.sample_gather_cap_s = sample_gather_cap_s
        self._pending: list[Work] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._counter = itertools.count()
        self._last_was_sample = False
        self._running: list[Work] = []  # the batch the engine runs now (for `snapshot`)
        # Metrics hook (service/telemetry.py): batch_started / batch_done / first_token.
        self.observer: Any = None
        self._thread = threading.Thread(target=self._loop, name="engine-scheduler", daemon=True)

    # ----- submitting --------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def call(self, key: str, fn: Callable[[Engine], Any]) -> Future:
        """Run `fn(engine)` alone, after earlier work of `key`."""
        return self._submit(Work("call", key, "", fn))

    def forward_backward(
        self, key: str, base_model: str, prepare: Callable[[Engine], ForwardBackwardRequest]
    ) -> Future:
        """Enqueue a forward_backward; `prepare(engine)` builds the request in the engine thread."""
        return self._submit(Work("forward_backward", key, base_model, prepare))

    def sample(
        self,
        key: str,
        base_model: str,
        prepare: Callable[[Engine], list[SampleRequest]],
        on_token: TokenCallback | None = None,
    ) -> Future:
        """Enqueue sampling; the future's result is one `SampleResult` per prepared request."""
        return self._submit(Work("sample", key, base_model, prepare, on_token=on_token))

    def pending_count(self) -> int:
        with self._cond:
            return len(self._pending)

    def snapshot(self) -> dict[str, list[dict]]:
        """A read-only copy of what runs now and what waits (kind, key, base model, seconds
        waited), for the dashboard's queue page; it never touches the engine."""
        now = time.monotonic()
        with self._cond:
            running, pending = list(self._running), list(self._pending)

        def describe(work: Work) -> dict:
            return {
                "kind": work.kind,
                "key": work.key,
                "base_model": work.base_model,
                "waited_s": round(now - work.submitted, 3),
            }

        return {
            "running": [describe(w) for w in running],
            "pending": [describe(w) for w in pending],
        }

    def _submit(self, work: Work) -> Future:
        with self._cond:
            if self._stopping:
                raise SchedulerStopped("the server is shutting down")
            work.seq = next(self._counter)
            self._pending.append(work)
            self._cond.notify()
        return work.future

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the work already queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ----- the engine thread -------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._next_batch()
                if batch[0].kind == "sample" and self._gather_samples(batch[0]):
                    batch = self._next_batch()
                for work in batch:
                    self._pending.remove(work)
                self._running = batch
            try:
                self._execute_observed(batch)
            finally:
                with self._cond:
                    self._running = []

    def _execute_observed(self, batch: list[Work]) -> None:
        """`_execute`, telling the observer (if any) when the batch starts and what it did;
        an observer that fails is logged, never the batch's failure."""
        observer = self.observer
        started = time.monotonic()
        if observer is not None:
            with _logged_failure():
                observer.batch_started(batch[0].kind, [w.submitted for w in batch], started)
        self._execute(batch)
        if observer is not None:
            with _logged_failure():
                done = [w.future for w in batch if w.future.done() and not w.future.cancelled()]
                outcomes = [f.exception() or f.result() for f in done]
                observer.batch_done(batch[0].kind, outcomes, time.monotonic() - started)

    def _gather_samples(self, head: Work) -> bool:
        """With the lock held: wait while samples keep arriving (see the module doc); True
        when more came. Stopping, or a full batch, ends the wait."""
        deadline = head.submitted + self.sample_gather_cap_s
        arrived = False
        while not self._stopping:
            samples = [w for w in self._pending if w.kind == "sample"]
            if len(samples) >= self.max_sample_rows:
                break
            now = time.monotonic()
            until = min(max(w.submitted for w in samples) + self.sample_gather_s, deadline)
            if now >= until:
                break
            before = len(self._pending)
            self._cond.wait(until - now)
            arrived = arrived or len(self._pending) > before
        return arrived

    def _runnable(self, index: int) -> bool:
        """No earlier work of the same key, except that reads may pass reads."""
        work = self._pending[index]
        if not work.key:
            return True
        for earlier in self._pending[:index]:
            if earlier.key == work.key and not (work.kind == earlier.kind == "sample"):
                return False
        return True

    def _next_batch(self) -> list[Work]:
        head = self._pending[0]
        if not self._last_was_sample or head.kind == "sample":
            for index, work in enumerate(self._pending):
                if work.kind == "sample" and self._runnable(index):
                    head = work
                    break
        self._last_was_sample = head.kind == "sample"
        if head.kind == "call":
            return [head]
        batch, keys = [head], {head.key}
        for index, work in enumerate(self._pending):
            if work is head or work.kind != head.kind or work.base_model != head.base_model:
                continue
            if not self._runnable(index):
                continue
            if head.kind == "forward_backward" and work.key in keys:
                continue
            if head.kind == "sample" and len(batch) >= self.max_sample_rows:
                break
            batch.append(work)
            keys.add(work.key)
        return batch

    def _execute(self, batch: list[Work]) -> None:
        prepared: list[tuple[Work, Any]] = []
        for work in batch:
            try:
                prepared.append((work, work.prepare(self.engine)))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                _fail(work, exc)
        if not prepared:
            return
        kind = prepared[0][0].kind
        try:
            if kind == "call":
                outcomes = [prepared[0][1]]
            elif kind == "forward_backward":
                outcomes = self.engine.forward_backward_batch([req for _, req in prepared])
            else:
                outcomes = self._sample(prepared)
        except BaseException as exc:  # noqa: BLE001
            if len(prepared) == 1:
                _fail(prepared[0][0], exc)
                return
            logger.info("batch of %d failed (%s); retrying its items alone", len(prepared), exc)
            for work, _ in prepared:
                self._execute_alone(work)
            return
        for (work, _), outcome in zip(prepared, outcomes, strict=True):
            _succeed(work, outcome)

    def _execute_alone(self, work: Work) -> None:
        try:
            request = work.prepare(self.engine)
            if work.kind == "forward_backward":
                outcome = self.engine.forward_backward_batch([request])[0]
            else:
                outcome = self._sample([(work, request)])[0]
        except BaseException as exc:  # noqa: BLE001
            _fail(work, exc)
            return
        _succeed(work, outcome)

    def _sample(self, prepared: list[tuple[Work, list[SampleRequest]]]) -> list[list]:
        flat: list[SampleRequest] = []
        owners: list[tuple[Work, int]] = []  # flat index → (work, index within the work)
        for work, requests in prepared:
            for index, request in enumerate(requests):
                flat.append(request)
                owners.append((work, index))

        first: set[int] = set()

        def on_token(flat_index: int, sample_index: int, token: int, logprob: float) -> None:
            work, index = owners[flat_index]
            if self.observer is not None and id(work) not in first:
                first.add(id(work))
                with _logged_failure():
                    self.observer.first_token(work.submitted)
            if work.on_token is not None:
                work.on_token(index, sample_index, token, logprob)

        streaming = any(work.on_token is not None for work, _ in prepared)
        results = self.engine.sample_batch(flat, on_token if streaming else None)
        grouped: dict[int, list] = {id(work): [] for work, _ in prepared}
        for (work, _), result in zip(owners, results, strict=True):
            grouped[id(work)].append(result)
        return [grouped[id(work)] for work, _ in prepared]


@contextlib.contextmanager
def _logged_failure():
    try:
        yield
    except Exception:  # noqa: BLE001 - metrics must never fail the work
        logger.exception("the scheduler's observer failed")


def _succeed(work: Work, outcome: Any) -> None:
    if not work.future.done():
        work.future.set_result(outcome)


def _fail(work: Work, exc: BaseException) -> None:
    if not isinstance(exc, Exception):  # KeyboardInterrupt etc. must not vanish in a future
        raise exc
    if not work.future.done():
        work.future.set_exception(exc)
