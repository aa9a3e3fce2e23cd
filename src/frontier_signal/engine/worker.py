"""The engine-worker boundary: the only way services reach an engine.

A worker takes typed operations (`engine/operations.py`) and answers each with its typed result;
`info()` is a read-only snapshot of what its engine holds (loaded models, their context
lengths, runs, memory), published by the engine side after each batch, so the event loop never
reads the engine. `InProcessWorker` wraps the scheduler thread of this process; a worker in
another process (a Ray actor) implements the same `EngineWorker` protocol: operations and
results pickle, and `on_token` is a side channel the worker carries however it can.

Cancelling the task awaiting `submit` cancels the operation: a queued one never runs, a
generation stops at the end of its current decode slice. This module knows nothing about HTTP
or the store.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Protocol, runtime_checkable

from frontier_signal.engine import executor
from frontier_signal.engine.engine import Engine
from frontier_signal.engine.operations import WorkerInfo
from frontier_signal.engine.scheduler import Scheduler
from frontier_signal.engine.types import TokenCallback

__all__ = ["DirectWorker", "EngineWorker", "InProcessWorker", "WorkerInfo"]


@runtime_checkable
class EngineWorker(Protocol):
    """What services hold: submit operations, read the published snapshot."""

    async def submit(
        self,
        op: Any,
        *,
        key: str = "",
        owner: str = "",
        on_token: TokenCallback | None = None,
    ) -> Any:
        """Run `op` after earlier work of `key` (a run id; "" for none), `owner` (a tenant)
        taking its fair turn; its typed result. `on_token(request, sample, token, logprob)`
        is called as a `Sample` op generates (from another thread)."""
        ...

    def info(self) -> WorkerInfo:
        """What the engine held after its last batch (plain data; never blocks on it)."""
        ...

    def snapshot(self) -> dict[str, list[dict]]:
        """What runs now and what waits (kind, key, base model, seconds waited)."""
        ...

    def counts(self) -> dict:
        """Queued work, generations in progress, generations stopped (their caller left)."""
        ...

    def observe(self, observer: Any) -> None:
        """Send batch starts, ends and first tokens to `observer` (service/telemetry.py)."""
        ...

    def workers(self) -> list[dict]:
        """One entry per engine worker (`GET /ready`): id, node, pid, state ("ready" |
        "starting" | "dead"), base models loaded, runs held, memory those runs hold."""
        ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the work already queued, then stop (blocking: call it off the event loop)."""
        ...


class InProcessWorker:
    """An `EngineWorker` over this process's scheduler thread (`engine/scheduler.py`).

    Args:
        engine: the `Engine` the scheduler thread will own (built from `engine_options`
            when None).
        engine_options: `Engine` arguments (device, dtype, decode_4bit, ...).
        cache_options: `Engine.configure_caches` arguments, applied before the thread starts.
        scheduler_options: `Scheduler` arguments (sample gathering, slice tokens).
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        engine_options: dict | None = None,
        cache_options: dict | None = None,
        scheduler_options: dict | None = None,
    ):
        engine = engine if engine is not None else Engine(**(engine_options or {}))
        if cache_options:
            engine.configure_caches(**cache_options)
        self._scheduler = Scheduler(engine, **(scheduler_options or {}))

    async def submit(
        self,
        op: Any,
        *,
        key: str = "",
        owner: str = "",
        on_token: TokenCallback | None = None,
    ) -> Any:
        future = self._scheduler.submit(op, key, owner, on_token)
        return await asyncio.wrap_future(future)  # cancelling this cancels the work

    def info(self) -> WorkerInfo:
        return self._scheduler.info

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler thread itself, for tests that hold the engine (`scheduler.call`);
        services use only the `EngineWorker` methods."""
        return self._scheduler

    def snapshot(self) -> dict[str, list[dict]]:
        return self._scheduler.snapshot()

    def counts(self) -> dict:
        return self._scheduler.counts() | {"queued": self._scheduler.pending_count()}

    def observe(self, observer: Any) -> None:
        self._scheduler.observer = observer

    def workers(self) -> list[dict]:
        info = self.info()
        state = "ready" if self._scheduler.is_alive() else "starting"
        return [
            {
                "id": "worker-0",
                "node": socket.gethostname(),
                "pid": os.getpid(),
                "state": state,
                "base_models": list(info.loaded_models),
                "runs": list(info.runs),
                "memory_bytes": info.memory_bytes,
            }
        ]

    def start(self) -> None:
        self._scheduler.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._scheduler.stop(timeout)


class DirectWorker:
    """Runs operations at once in the caller's thread, for single-threaded programs (the local
    pipeline, the CLI's export): no scheduler, no batching with other callers.

    Args:
        engine_options: `Engine` arguments (device, dtype, ...).
    """

    def __init__(self, **engine_options: Any):
        self._engine = Engine(**engine_options)

    def run(self, op: Any) -> Any:
        """`op`'s typed result (`engine/executor.py`)."""
        return executor.execute(self._engine, op)

    def info(self) -> WorkerInfo:
        return executor.describe(self._engine)
