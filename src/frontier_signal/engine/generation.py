"""The scheduler's sampling turns: gather a burst of samples, start a decode batch, advance it
one slice per turn, stop the rows whose caller left, settle each work as its rows finish.

`SampleTurns` is a part of `Scheduler` (engine/scheduler.py), split out because generations in
slices are their own concept; the queue, the ordering rules and the engine thread stay there.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from frontier_signal.engine.types import SampleRequest
from frontier_signal.engine.work import Generating, Work, logged_failure

if TYPE_CHECKING:
    import threading

    from frontier_signal.engine.engine import Engine


class SampleTurns:
    """Sample batches for `Scheduler`, which holds the queue, the lock and the settling
    methods these call (`_finish`, `_succeed`, `_fail`)."""

    engine: Engine
    observer: Any
    slice_tokens: int
    max_sample_rows: int
    sample_gather_s: float
    sample_gather_cap_s: float
    cancelled_generations: int
    _pending: list[Work]
    _generating: deque[Generating]
    _cond: threading.Condition
    _stopping: bool

    if TYPE_CHECKING:  # Scheduler's methods (engine/scheduler.py)

        def _finish(self, works: list[Work], generating: Generating | None = None) -> None: ...
        def _succeed(self, work: Work, outcome: Any) -> None: ...
        def _fail(self, work: Work, exc: BaseException) -> None: ...

    def _gather_samples(self, head: Work) -> bool:
        """With the lock held: wait while samples keep arriving (see the module doc); True
        when more came. Stopping, or a full batch, ends the wait."""
        deadline = head.submitted + self.sample_gather_cap_s
        arrived = False
        while not self._stopping:
            samples = [w for w in self._pending if w.kind == "sample" and w.generating is None]
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

    def _start_sampling(self, prepared: list[tuple[Work, list[SampleRequest]]]) -> None:
        """Run the prompts of a sample batch and its first slice; it then takes turns."""
        flat: list[SampleRequest] = []
        owners: list[tuple[Work, int]] = []
        for work, requests in prepared:
            for index, request in enumerate(requests):
                flat.append(request)
                owners.append((work, index))

        first: set[int] = set()

        def on_token(flat_index: int, sample_index: int, token: int, logprob: float) -> None:
            work, index = owners[flat_index]
            if self.observer is not None and id(work) not in first:
                first.add(id(work))
                with logged_failure():
                    self.observer.first_token(work.submitted)
            if work.on_token is not None:
                work.on_token(index, sample_index, token, logprob)

        streaming = any(work.on_token is not None for work, _ in prepared)
        job = self.engine.start_sampling(flat, on_token if streaming else None)
        generating = Generating(job, [work for work, _ in prepared], owners)
        with self._cond:
            for work in generating.works:
                work.generating = generating
            self._generating.append(generating)
        self._advance(generating)

    def _advance(self, generating: Generating) -> None:
        """One slice; stop the rows of cancelled callers first; settle every work whose rows
        are all done (a short request batched with a long one does not wait for it)."""
        left = {
            i
            for i, (work, _) in enumerate(generating.owners)
            if work.future.cancelled() and i not in generating.stopped
        }
        if left:
            generating.stopped |= left
            if generating.job.stop(left):
                self.cancelled_generations += len({id(generating.owners[i][0]) for i in left})
        try:
            generating.job.advance(self.slice_tokens)
        except Exception as exc:  # noqa: BLE001 - each waiting caller gets it
            failed = list(generating.works)
            self._finish(failed, generating)
            generating.job.release()
            for work in failed:
                self._fail(work, exc)
            self._observe_finished(generating, [exc])
            return
        done = generating.job.done_requests()
        ready = [
            work
            for work in generating.works
            if all(i in done for i, (owner, _) in enumerate(generating.owners) if owner is work)
        ]
        if not ready:
            return
        wanted = {i for i, (owner, _) in enumerate(generating.owners) if owner in ready}
        results = generating.job.results(wanted)
        self._finish(ready, generating)
        outcomes = []
        for work in ready:
            outcome = [results[i] for i in sorted(wanted) if generating.owners[i][0] is work]
            outcomes.append(outcome)
            self._succeed(work, outcome)
        self._observe_finished(generating, outcomes)

    def _observe_finished(self, generating: Generating, outcomes: list[Any]) -> None:
        """Tell the observer what finished works of a generation made, over its whole time."""
        if self.observer is not None:
            with logged_failure():
                seconds = time.monotonic() - generating.started
                self.observer.batch_done("sample", outcomes, seconds)
