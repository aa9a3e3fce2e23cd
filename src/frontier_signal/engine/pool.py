"""`WorkerPool`: an `EngineWorker` over N engine workers that are Ray actors
(`engine/ray_worker.py`), for one machine (`local`) or a Ray cluster.

Placement and routing:
- each run lives on one worker (sticky); a new or restored run goes to the ready worker with
  the most room (fewest runs held, then one that has the base model already, then the least
  memory held);
- every operation of a run goes to the worker holding it. Which worker that is comes from the
  workers themselves (each actor knows the runs it holds), so several API processes sharing
  the actors agree without a registry: a run this process has not seen is looked up on every
  ready worker;
- sampling a base model or a saved checkpoint goes to any ready worker, one that has the base
  model loaded and the shortest queue first.

Faults: an operation whose worker dies fails with `WorkerLost` (a retryable 503); the worker's
runs are forgotten here, and the next operation of such a run finds no holder and raises
`RunNotHeld`, on which the run service restores the run on a live worker from its newest
training checkpoint. Ray restarts a killed actor (`max_restarts`); it is "starting" until it
answers again and then takes new runs. A background task asks every worker what it holds
each `poll_s` seconds: `info()`, `counts()`, `snapshot()` and `workers()` answer from that,
never blocking. Importing this module imports ray; nothing else does unless the settings ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from frontier_signal.engine import operations as ops
from frontier_signal.engine.errors import RunNotHeld, WorkerLost
from frontier_signal.engine.operations import WorkerInfo, held_run
from frontier_signal.engine.ray_worker import NAMESPACE, start_actor
from frontier_signal.engine.types import TokenCallback

logger = logging.getLogger(__name__)


@dataclass
class Slot:
    """One worker as this process last saw it."""

    index: int
    handle: Any
    state: str = "starting"  # "ready" | "starting" | "dead"
    description: dict = field(default_factory=dict)  # `EngineActor.describe()`
    placing: int = 0  # runs being placed here now
    down_since: float = field(default_factory=time.monotonic)

    def runs(self) -> list[str]:
        return list(self.description.get("runs", []))

    def info(self) -> WorkerInfo:
        return self.description.get("info") or WorkerInfo()


def connect(address: str, workers: int, cpus: float) -> bool:
    """Join (or, for `local`, start) a Ray instance; True when this call started it."""
    if ray.is_initialized():
        return False
    options: dict = {"namespace": NAMESPACE, "log_to_driver": False, "configure_logging": False}
    # ray.init replaces the SIGTERM handler with one that exits at once: the server's own
    # (uvicorn's graceful shutdown, which writes the runs' checkpoints) is put back.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if address == "local":
            total = max(os.cpu_count() or 1, math.ceil(workers * (cpus or 1)))
            ray.init(address="local", num_cpus=total, include_dashboard=False, **options)
        else:
            _token_auth_when_available()
            ray.init(address=address, **options)
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
    return True


def _token_auth_when_available() -> None:
    """Joining a cluster: use Ray's token authentication when this machine has the token
    (`ray start` turns it on by default and writes ~/.ray/auth_token, but
    `ray.init(address=...)` alone does not look for it), unless RAY_AUTH_MODE says otherwise.
    This is what `ray start` itself calls (a private helper: absent before Ray 2.5x)."""
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:
        return
    with contextlib.suppress(Exception):
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


class WorkerPool:
    """`EngineWorker` over `workers` Ray actors.

    Args:
        address: `local` (start Ray in this process) or a cluster address for `ray.init`
            (`auto`, `ray://host:port`, `host:port`).
        workers: how many engine workers (actors) to run.
        worker_options: `InProcessWorker` arguments each actor builds its engine with.
        cpus: CPUs (and torch threads) per worker without GPUs; 0: this cluster's CPUs / N.
        poll_s: how often the workers are asked what they hold.
        wait_ready_s: how long an operation waits for a ready worker before a 503.
    """

    def __init__(
        self,
        address: str,
        workers: int = 1,
        worker_options: dict | None = None,
        cpus: float = 0,
        poll_s: float = 0.5,
        wait_ready_s: float = 300.0,
    ):
        self.address = address
        self.size = max(1, workers)
        self.worker_options = worker_options or {}
        self.cpus = cpus
        self.poll_s = poll_s
        self.wait_ready_s = wait_ready_s
        self.dead_after_s = 300.0
        self.slots: list[Slot] = []
        self._where: dict[str, Slot] = {}  # run → the worker this process last saw it on
        self._poller: asyncio.Task | None = None
        self._stopping = False
        self._started_ray = False

    # ----- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._started_ray = connect(self.address, self.size, self.cpus)
        resources = ray.cluster_resources()
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        cpus = self.cpus or max(1, int(resources.get("CPU", 1)) // self.size)
        threads = 0 if gpus else int(max(1, cpus))
        for index in range(self.size):
            handle = start_actor(
                index,
                self.worker_options,
                threads,
                detached=self.address != "local",
                cpus=0 if gpus else cpus,
                gpus=gpus,
            )
            self.slots.append(Slot(index, handle))
        self._ensure_poller()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop polling and leave Ray; a `local` instance ends with it (its actors too), the
        actors of a cluster stay for the other API processes."""
        self._stopping = True
        if self._started_ray:
            ray.shutdown()

    def observe(self, observer: Any) -> None:
        """Batch metrics stay in the worker processes (not sent here)."""

    # ----- reading -----------------------------------------------------------------------
    def ready_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.state == "ready"]

    def info(self) -> WorkerInfo:
        infos = [slot.info() for slot in self.ready_slots()]
        union = lambda name: sorted({x for i in infos for x in getattr(i, name)})  # noqa: E731
        return WorkerInfo(
            models=union("models"),
            loaded_models=union("loaded_models"),
            context_lengths={k: v for i in infos for k, v in i.context_lengths.items()},
            runs=union("runs"),
            memory_bytes=sum(i.memory_bytes for i in infos),
            adapter_keys=union("adapter_keys"),
            caches=infos[0].caches if infos else {},
        )

    def counts(self) -> dict:
        total = dict.fromkeys(("pending", "generating", "cancelled_generations", "queued"), 0)
        for slot in self.ready_slots():
            for name, value in slot.description.get("counts", {}).items():
                total[name] = total.get(name, 0) + value
        return total

    def snapshot(self) -> dict[str, list[dict]]:
        merged: dict[str, list[dict]] = {"running": [], "pending": []}
        for slot in self.ready_slots():
            for name, items in slot.description.get("snapshot", {}).items():
                merged.setdefault(name, []).extend(items)
        return merged

    def workers(self) -> list[dict]:
        """One entry per worker: id, node, pid, state, base models, runs held, memory."""
        answer = []
        for slot in self.slots:
            described = slot.description
            answer.append(
                {
                    "id": f"worker-{slot.index}",
                    "node": described.get("node", ""),
                    "pid": described.get("pid"),
                    "state": slot.state,
                    "base_models": list(slot.info().loaded_models),
                    "runs": slot.runs() if slot.state == "ready" else [],
                    "memory_bytes": slot.info().memory_bytes,
                }
            )
        return answer

    # ----- submitting --------------------------------------------------------------------
    async def submit(
        self, op: Any, *, key: str = "", owner: str = "", on_token: TokenCallback | None = None
    ) -> Any:
        self._ensure_poller()
        slot = await self._route(op, key)
        if slot is None:  # deleting a run no worker holds: nothing to free
            return ops.RunDeleted(op.run_id)
        placing = isinstance(op, ops.CreateRun | ops.RestoreRun)
        slot.placing += placing
        try:
            result = await self._call(slot, op, key, owner, on_token)
        except RunNotHeld as exc:
            self._forget(exc.run_id, slot)
            raise
        finally:
            slot.placing -= placing
        self._track(slot, op)
        return result

    async def _route(self, op: Any, key: str) -> Slot | None:
        if isinstance(op, ops.CreateRun | ops.RestoreRun):
            holder = await self._holder(op.run_id)
            return holder or await self._place(op)
        run_id = held_run(op, key)
        if run_id:
            holder = await self._holder(run_id)
            if holder is None and isinstance(op, ops.DeleteRun):
                return None
            if holder is None:
                raise RunNotHeld(run_id)
            return holder
        return await self._any(ops.batch_model(op) or getattr(op, "name", ""))

    async def _holder(self, run_id: str) -> Slot | None:
        """The ready worker holding `run_id`, asking every worker when this process does not
        know (another process placed it, or a worker restarted)."""
        slot = self._where.get(run_id)
        if slot is not None and slot.state == "ready":
            return slot
        await self._wait_ready()
        await asyncio.gather(*(self._describe(s) for s in self.ready_slots()))
        slot = self._where.get(run_id)
        return slot if slot is not None and slot.state == "ready" else None

    async def _place(self, op: Any) -> Slot:
        """The ready worker with the most room for a new run (see the module docstring)."""
        await self._wait_ready()
        base = op.config.base_model if op.config is not None else ""

        def room(slot: Slot) -> tuple:
            info = slot.info()
            return (len(slot.runs()) + slot.placing, base not in info.loaded_models,
                    info.memory_bytes, slot.index)  # fmt: skip

        return min(self.ready_slots(), key=room)

    async def _any(self, base_model: str) -> Slot:
        """A ready worker for work of no run: one with `base_model` loaded, least busy."""
        await self._wait_ready()

        def busy(slot: Slot) -> tuple:
            counts = slot.description.get("counts", {})
            queue = counts.get("queued", 0) + counts.get("generating", 0)
            return (base_model not in slot.info().loaded_models, queue, slot.index)

        return min(self.ready_slots(), key=busy)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.wait_ready_s
        while not self.ready_slots():
            if time.monotonic() > deadline:
                raise WorkerLost(
                    f"no engine worker is ready (of {self.size}); retry in a few seconds"
                )
            await asyncio.sleep(0.05)

    async def _call(self, slot: Slot, op, key: str, owner: str, on_token) -> Any:
        if on_token is not None and isinstance(op, ops.Sample):
            generator = slot.handle.stream.options(num_returns="streaming").remote(op, key, owner)
            return await self._guard(slot, _streamed(generator, on_token), generator)
        ref = slot.handle.submit.remote(op, key, owner)
        return await self._guard(slot, _awaited(ref), ref)

    async def _guard(self, slot: Slot, awaitable, ref) -> Any:
        """Await a Ray call: its own exception unwrapped, a dead worker → `WorkerLost`, and
        cancelling the caller cancels the Ray task (a generation stops)."""
        try:
            return await awaitable
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
            raise
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise cause from None
        except RayActorError as exc:
            self._lost(slot, exc)
            raise WorkerLost(
                f"engine worker {slot.index} stopped while running this operation; retry it "
                "(its runs resume on a live worker from their newest training checkpoint)"
            ) from None

    # ----- bookkeeping -------------------------------------------------------------------
    def _track(self, slot: Slot, op: Any) -> None:
        if isinstance(op, ops.CreateRun | ops.RestoreRun):
            self._where[op.run_id] = slot
            runs = set(slot.runs()) | {op.run_id}
            slot.description = slot.description | {"runs": sorted(runs)}
        elif isinstance(op, ops.DeleteRun):
            self._forget(op.run_id, slot)

    def _forget(self, run_id: str, slot: Slot) -> None:
        if self._where.get(run_id) is slot:
            del self._where[run_id]
        runs = [r for r in slot.runs() if r != run_id]
        slot.description = slot.description | {"runs": runs}

    def _lost(self, slot: Slot, exc: BaseException | None = None) -> None:
        if slot.state == "ready":
            logger.warning("engine worker %d lost: %s", slot.index, exc)
            slot.state = "starting"
            slot.down_since = time.monotonic()
        for run_id in slot.runs():
            self._forget(run_id, slot)

    async def _describe(self, slot: Slot, timeout: float = 5.0) -> None:
        """Ask `slot` what it holds; ready when it answers, starting (then dead) when not."""
        try:
            described = await asyncio.wait_for(_awaited(slot.handle.describe.remote()), timeout)
        except (TimeoutError, RayActorError) as exc:
            if isinstance(exc, RayActorError) or slot.state != "ready":
                self._lost(slot, exc)
                if time.monotonic() - slot.down_since > self.dead_after_s:
                    slot.state = "dead"
            return
        if slot.description.get("pid") not in (None, described["pid"]):
            self._lost(slot, RuntimeError("restarted"))  # a new process holds nothing yet
        slot.description, slot.state = described, "ready"
        for run_id, holder in list(self._where.items()):
            if holder is slot and run_id not in described["runs"]:
                del self._where[run_id]
        for run_id in described["runs"]:  # held twice (see docs): the lower-numbered worker
            current = self._where.get(run_id)
            if current is None or current.state != "ready" or current.index >= slot.index:
                self._where[run_id] = slot

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            with contextlib.suppress(RuntimeError):  # no running loop yet: the next submit
                self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while not self._stopping:
            with contextlib.suppress(Exception):
                await asyncio.gather(*(self._describe(slot) for slot in self.slots))
            await asyncio.sleep(self.poll_s)


async def _awaited(ref) -> Any:
    return await ref


async def _streamed(generator, on_token: TokenCallback) -> Any:
    """Call `on_token` for the tokens a `stream` generator yields; its final result."""
    result = None
    async for ref in generator:
        kind, value = await ref
        if kind == "tokens":
            for event in value:
                on_token(*event)
        else:
            result = value
    return result
