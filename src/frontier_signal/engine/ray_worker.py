"""An engine worker as a Ray actor: an `InProcessWorker` (engine + scheduler thread) hosted in
the actor's own process, so concurrent operations from every API process batch there exactly
as they do in one process.

The actor is asynchronous with a high `max_concurrency`: each `submit` awaits its scheduler
future on the actor's event loop while the engine thread works, so many callers' operations
wait in the scheduler together. `stream` is a Ray streaming generator for a `Sample` with
`on_token`: it yields the tokens as they come (in small lists), then the result; cancelling
the caller's Ray task cancels the scheduler future, which stops the generation.

The actor keeps the set of runs it holds (created or restored through it); an operation on a
run it does not hold raises `RunNotHeld` at once, so the pool can re-place the run (a worker
that Ray restarted after a crash holds nothing). It knows nothing about placement (that is
`engine/pool.py`), HTTP or the store. Importing this module imports ray.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import ray

from frontier_signal.engine import operations as ops
from frontier_signal.engine.errors import RunNotHeld
from frontier_signal.engine.operations import held_run
from frontier_signal.engine.worker import InProcessWorker

NAMESPACE = "frontier-signal"
ACTOR_NAME = "frontier-signal-worker-{index}"


class EngineActor:
    """The actor's body (wrapped with `ray.remote` by the pool).

    Args:
        index: the worker's number (its name is `frontier-signal-worker-{index}`).
        worker_options: `InProcessWorker` arguments (engine, cache and scheduler options).
        threads: torch threads of this worker's engine (0: torch's default).
    """

    def __init__(self, index: int, worker_options: dict, threads: int = 0):
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        self.index = index
        self._worker = InProcessWorker(**worker_options)
        self._worker.start()
        self._held: set[str] = set()

    async def submit(self, op: Any, key: str = "", owner: str = "") -> Any:
        """`op`'s typed result (after earlier work of `key`)."""
        if isinstance(op, ops.DeleteRun) and op.run_id not in self._held:
            return ops.RunDeleted(op.run_id)  # nothing to free here
        self._check_held(op, key)
        result = await self._worker.submit(op, key=key, owner=owner)
        self._track(op)
        return result

    async def stream(self, op: Any, key: str = "", owner: str = ""):
        """A streaming generator: `("tokens", [(request, sample, token, logprob), ...])` items
        as a `Sample` generates, then `("result", Sampled)`."""
        self._check_held(op, key)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def on_token(*event) -> None:  # the engine thread
            loop.call_soon_threadsafe(queue.put_nowait, event)

        task = asyncio.ensure_future(
            self._worker.submit(op, key=key, owner=owner, on_token=on_token)
        )
        try:
            while not task.done():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                events = [getter.result()]
                while not queue.empty():
                    events.append(queue.get_nowait())
                yield ("tokens", events)
            events = []
            while not queue.empty():
                events.append(queue.get_nowait())
            if events:
                yield ("tokens", events)
            yield ("result", task.result())
        finally:
            task.cancel()  # the caller left (ray.cancel): the generation stops

    def describe(self) -> dict:
        """Who this worker is and what its engine holds (`WorkerInfo`), its queue and its
        runs (the pool routes by them)."""
        counts = self._worker.counts()
        return {
            "index": self.index,
            "node": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "info": self._worker.info(),
            "runs": sorted(self._held),
            "counts": counts,
            "snapshot": self._worker.snapshot(),
        }

    def held(self) -> list[str]:
        return sorted(self._held)

    def _check_held(self, op: Any, key: str) -> None:
        run_id = held_run(op, key)
        if run_id and run_id not in self._held:
            raise RunNotHeld(run_id)

    def _track(self, op: Any) -> None:
        if isinstance(op, ops.CreateRun | ops.RestoreRun):
            self._held.add(op.run_id)
        elif isinstance(op, ops.DeleteRun):
            self._held.discard(op.run_id)


def actor_options(index: int, detached: bool, cpus: float, gpus: float) -> dict:
    """Ray options of worker `index`: named in our namespace (several API processes share it),
    restarted by Ray when its process dies, detached from the driver on a cluster."""
    options: dict = {
        "name": ACTOR_NAME.format(index=index),
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": 1000,
        "num_cpus": cpus,
        "num_gpus": gpus,
    }
    if detached:
        options["lifetime"] = "detached"
    return options


def start_actor(index: int, worker_options: dict, threads: int, **options: Any):
    """A handle on worker `index` (created when no live actor of its name exists)."""
    remote = ray.remote(EngineActor)
    return remote.options(**actor_options(index, **options)).remote(index, worker_options, threads)
