"""The scheduler: one thread owns the engine; everything else enqueues work and waits on a future.

Work is a typed operation (`submit`, engine/operations.py, run by engine/executor.py; what
`InProcessWorker` sends), or in tests a function of the engine (`call`, `forward_backward`,
`sample`). Operations batch by type: `ForwardBackward` → forward_backward, `Sample` → sample,
anything else → call. After each batch the engine thread republishes `info` (a `WorkerInfo`)
before any of its callers hears back.

Ordering and batching rules (DESIGN.md, contract notes "Scheduling"):
- Work carries an ordering key (a run id, or "" for none). Work of one key runs in arrival order,
  except that reads (samples) may overtake other reads.
- Runnable forward_backward work of different runs on the same base model runs as one mixed batch
  (at most one per run per batch); runnable samples on one base model batch together; runnable
  optimizer steps of different runs (`OptimStep` ops) run as one multi-tensor update
  (`executor.optim_step_batch`: the same weights as one after another), each failing alone.
- Samples go first when they can, so short sampling calls do not wait behind a training queue,
  but a batch of samples is always followed by other waiting work, so training is never starved.
- A sample that finds the engine idle waits up to `sample_gather_s` (20 ms) for more samples while
  they keep arriving, capped at `sample_gather_cap_s` (100 ms): a burst of concurrent requests
  then decodes as one batch (8 requests on 8 runs: 2.4-2.9x -> 4.1x one after another when it
  came; ~3x since batch-1 decode got ~3x faster, docs/engine.md). A lone request pays 20 ms.
- Before each batch or slice, torch's thread count is set to the CPUs other processes leave free
  (engine/threads.py; CPU engines only).
- Anything else (create, checkpoints, loads) is a `call`: it runs alone, a barrier for its key
  only.
- Generations run in slices of `slice_tokens` decode steps (the KV cache and each row's state
  kept between slices): after a slice, waiting work runs before the next one, and generations in
  progress take turns (round-robin), so one long generation cannot hold the engine. Work keeps
  its place in the queue while it generates, so the order rules above still hold.
- Among waiting work, the owner (a tenant, else the key) served least recently goes first.
- A sample whose future was cancelled (its caller left) stops at the end of the current slice;
  `counts()` counts them.
- `snapshot()` copies what runs and what waits (the dashboard's queue page) and `observer`
  receives batch starts and ends and first tokens (the Prometheus metrics); neither touches the
  engine, and an observer that fails is only logged.

When a batch fails, each of its items is retried alone, so one bad request fails only itself.
The scheduler knows nothing about HTTP or the store; a work's `owner` (the services pass the
tenant) is an opaque name for fairness.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from frontier_signal.engine import executor
from frontier_signal.engine.engine import Engine
from frontier_signal.engine.errors import SchedulerStopped
from frontier_signal.engine.generation import SampleTurns
from frontier_signal.engine.operations import WorkerInfo, batch_model, ordering_kind
from frontier_signal.engine.threads import governor_for
from frontier_signal.engine.types import ForwardBackwardRequest, SampleRequest, TokenCallback
from frontier_signal.engine.work import Generating, Work, logged_failure

__all__ = ["Scheduler", "SchedulerStopped", "Work"]

logger = logging.getLogger(__name__)


class Scheduler(SampleTurns):
    """Owns an `Engine` on a dedicated thread.

    Args:
        engine: the engine; no other thread may touch it once `start` is called.
        max_sample_rows: most sequences decoded together in one batch.
        sample_gather_s: how long a sample batch waits for the next sample to arrive (0: never).
        sample_gather_cap_s: the longest a sample batch waits in all.
        slice_tokens: decode steps a generation takes before waiting work gets a turn.
    """

    def __init__(
        self,
        engine: Engine,
        max_sample_rows: int = 32,
        sample_gather_s: float = 0.02,
        sample_gather_cap_s: float = 0.1,
        slice_tokens: int = 16,
    ):
        self.engine = engine
        self.max_sample_rows = max_sample_rows
        self.sample_gather_s = sample_gather_s
        self.sample_gather_cap_s = sample_gather_cap_s
        self.slice_tokens = slice_tokens
        self._pending: list[Work] = []
        self._generating: deque[Generating] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._counter = itertools.count()
        self._last_was_sample = False
        self._slice_next = False
        self._turn = itertools.count()
        self._served: dict[str, int] = {}  # owner → the turn it was last served
        self.cancelled_generations = 0
        self._running: list[Work] = []  # the batch or slice the engine runs now (`snapshot`)
        # Metrics hook (service/telemetry.py): batch_started / batch_done / first_token.
        self.observer: Any = None
        # What the engine holds, republished by the engine thread after each batch (`info`).
        self.info: WorkerInfo = executor.describe(engine)
        self._stale = ""  # the kind of batch running until `info` is republished
        self.threads = governor_for(engine.device)  # None: torch's thread count stays as set
        self._thread = threading.Thread(target=self._loop, name="engine-scheduler", daemon=True)

    # ----- submitting --------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether the engine thread runs (started, not stopped)."""
        return self._thread.is_alive()

    def submit(
        self, op: Any, key: str = "", owner: str = "", on_token: TokenCallback | None = None
    ) -> Future:
        """Enqueue a typed operation (`engine/operations.py`); the future's result is its typed
        result. `ForwardBackward` ops batch with those of other runs, `Sample` ops decode
        together (cancelling the future stops the generation), any other op runs alone."""
        work = Work(
            ordering_kind(op),
            key,
            batch_model(op),
            lambda engine: executor.prepare(engine, op),
            on_token=on_token,
            owner=owner,
            finish=lambda outcome: executor.finish(op, outcome),
        )
        return self._submit(work)

    def call(self, key: str, fn: Callable[[Engine], Any], owner: str = "") -> Future:
        """Run `fn(engine)` alone, after earlier work of `key`."""
        return self._submit(Work("call", key, "", fn, owner=owner))

    def forward_backward(
        self,
        key: str,
        base_model: str,
        prepare: Callable[[Engine], ForwardBackwardRequest],
        owner: str = "",
    ) -> Future:
        """Enqueue a forward_backward; `prepare(engine)` builds the request in the engine thread."""
        return self._submit(Work("forward_backward", key, base_model, prepare, owner=owner))

    def sample(
        self,
        key: str,
        base_model: str,
        prepare: Callable[[Engine], list[SampleRequest]],
        on_token: TokenCallback | None = None,
        owner: str = "",
    ) -> Future:
        """Enqueue sampling; the future's result is one `SampleResult` per prepared request.
        Cancelling the future stops its generation (at the end of the current slice)."""
        work = Work("sample", key, base_model, prepare, on_token=on_token, owner=owner)
        return self._submit(work)

    def pending_count(self) -> int:
        return len(self._pending)  # a read of a list's length needs no lock

    def snapshot(self) -> dict[str, list[dict]]:
        """A copy of what runs and what waits (kind, key, model, seconds waited): the queue page."""
        now = time.monotonic()
        with self._cond:
            running = list(self._running)
            pending = [w for w in self._pending if w not in running]
        return {
            "running": [w.describe(now) for w in running],
            "pending": [w.describe(now) for w in pending],
        }

    def counts(self) -> dict:
        """Queued work, generations in progress, generations stopped as their caller left."""
        with self._cond:
            return {
                "pending": sum(1 for w in self._pending if w.generating is None),
                "generating": len(self._generating),
                "cancelled_generations": self.cancelled_generations,
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
                # Only a batch that will run is picked: picking moves the samples-first turn.
                slice_turn = bool(self._generating) and self._slice_next
                batch = None if slice_turn else self._next_batch()
                if self._generating and batch is None:
                    generating = self._generating[0]
                    self._generating.rotate(-1)
                    self._slice_next = False
                    self._mark_served(generating.works)
                    batch = None
                else:
                    assert batch is not None  # the first pending work is runnable or generating
                    self._slice_next = True
                    if (
                        batch[0].kind == "sample"
                        and not self._generating
                        and self._gather_samples(batch[0])
                    ):
                        self._last_was_sample = False  # the same turn, with what arrived
                        batch = self._next_batch() or batch
                    self._mark_served(batch)
                    if batch[0].kind != "sample":
                        for work in batch:
                            self._pending.remove(work)
                self._running = list(generating.works) if batch is None else batch
            calls = ("call", "optim_step")  # may change the runs' memory (optimizer state)
            self._stale = "call" if batch is not None and batch[0].kind in calls else "batch"
            if self.threads is not None:
                self.threads.adjust()
            try:
                if batch is None:
                    self._advance(generating)
                else:
                    self._execute_observed(batch)
            finally:
                self._publish()
                with self._cond:
                    self._running = []

    def _publish(self) -> None:
        """Republish `info` once per batch, before its first caller hears back (so a caller
        sees what its own work changed). The runs' memory (a walk over their tensors) is
        recounted after calls only (creates, steps, loads, deletes), not after every slice."""
        if self._stale:
            memory = None if self._stale == "call" else self.info.memory_bytes
            self._stale = ""
            with logged_failure():
                self.info = executor.describe(self.engine, memory)

    def _execute_observed(self, batch: list[Work]) -> None:
        """`_execute`, telling the observer (if any) when the batch starts and what it did (a
        sample batch's outcomes are told as its works finish, in `_advance`); an observer that
        fails is logged, never the batch's failure."""
        observer = self.observer
        started = time.monotonic()
        if observer is not None:
            with logged_failure():
                observer.batch_started(batch[0].kind, [w.submitted for w in batch], started)
        self._execute(batch)
        if observer is not None and batch[0].kind != "sample":
            with logged_failure():
                done = [w.future for w in batch if w.future.done() and not w.future.cancelled()]
                outcomes = [f.exception() or f.result() for f in done]
                observer.batch_done(batch[0].kind, outcomes, time.monotonic() - started)

    def _mark_served(self, works: list[Work]) -> None:
        turn = next(self._turn)
        for work in works:
            self._served[work.fair_owner] = turn

    def _runnable(self, index: int) -> bool:
        """Not generating, and no earlier work of the same key, except that reads may pass
        reads."""
        work = self._pending[index]
        if work.generating is not None:
            return False
        if not work.key:
            return True
        for earlier in self._pending[:index]:
            if earlier.key == work.key and not (work.kind == earlier.kind == "sample"):
                return False
        return True

    def _next_batch(self) -> list[Work] | None:
        """The next batch of waiting work, or None when none can run yet."""
        runnable = [w for i, w in enumerate(self._pending) if self._runnable(i)]
        if not runnable:
            return None
        samples = [w for w in runnable if w.kind == "sample"]
        others = [w for w in runnable if w.kind != "sample"]
        pool = runnable
        if samples and not self._last_was_sample:
            pool = samples
        elif self._last_was_sample and others:
            pool = others  # a batch of samples is always followed by other waiting work
        head = min(pool, key=lambda w: (self._served.get(w.fair_owner, -1), w.seq))
        self._last_was_sample = head.kind == "sample"
        if head.kind == "call":
            return [head]
        batch, keys = [head], {head.key}
        for work in runnable:
            if work is head or work.kind != head.kind or work.base_model != head.base_model:
                continue
            if head.kind in ("forward_backward", "optim_step") and work.key in keys:
                continue
            if head.kind == "sample" and len(batch) >= self.max_sample_rows:
                break
            batch.append(work)
            keys.add(work.key)
        return batch

    def _execute(self, batch: list[Work]) -> None:
        prepared: list[tuple[Work, Any]] = []
        for work in batch:
            if work.future.cancelled():  # its caller left before it started
                self._finish([work])
                continue
            try:
                prepared.append((work, work.prepare(self.engine)))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                self._finish([work])
                self._fail(work, exc)
        if not prepared:
            return
        kind = prepared[0][0].kind
        try:
            if kind == "call":
                outcomes = [prepared[0][1]]
            elif kind == "forward_backward":
                outcomes = self.engine.forward_backward_batch([req for _, req in prepared])
            elif kind == "optim_step":
                outcomes = executor.optim_step_batch(self.engine, [op for _, op in prepared])
            else:
                self._start_sampling(prepared)
                return
        except BaseException as exc:  # noqa: BLE001
            if len(prepared) == 1:
                self._finish([prepared[0][0]])
                self._fail(prepared[0][0], exc)
                return
            logger.info("batch of %d failed (%s); retrying its items alone", len(prepared), exc)
            for work, request in prepared:
                self._execute_alone(work, request)
            return
        for (work, _), outcome in zip(prepared, outcomes, strict=True):
            if kind == "optim_step" and isinstance(outcome, Exception):
                self._fail(work, outcome)  # that step alone failed; the others applied
            else:
                self._succeed(work, outcome)

    def _execute_alone(self, work: Work, request: Any) -> None:
        try:
            if work.kind == "forward_backward":
                outcome = self.engine.forward_backward_batch([request])[0]
            elif work.kind == "optim_step":
                outcome = executor.execute(self.engine, request)
            else:
                self._start_sampling([(work, request)])
                return
        except BaseException as exc:  # noqa: BLE001
            self._finish([work])
            self._fail(work, exc)
            return
        self._succeed(work, outcome)

    def _succeed(self, work: Work, outcome: Any) -> None:
        self._publish()
        if not work.future.done():
            try:
                result = work.finish(outcome) if work.finish is not None else outcome
            except Exception as exc:  # noqa: BLE001 - handed to the waiting caller
                work.future.set_exception(exc)
                return
            work.future.set_result(result)

    def _fail(self, work: Work, exc: BaseException) -> None:
        if not isinstance(exc, Exception):  # KeyboardInterrupt etc. must not vanish in a future
            raise exc
        self._publish()
        if not work.future.done():
            work.future.set_exception(exc)

    def _finish(self, works: list[Work], generating: Generating | None = None) -> None:
        """Take works out of the queue; a generation with none left out of the turns."""
        with self._cond:
            for work in works:
                if work in self._pending:
                    self._pending.remove(work)
            if generating is not None:
                generating.works = [w for w in generating.works if w not in works]
                if not generating.works and generating in self._generating:
                    self._generating.remove(generating)
