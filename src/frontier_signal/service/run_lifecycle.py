"""The life of a run in the engine: create, load lazily, restore, unload, delete (`RunLifecycle`).

Runs load lazily after a restart, from their newest training checkpoint (a gradient that was
never applied is lost); a run that moved since its last training checkpoint gets one at
shutdown and before it is unloaded. Every engine call goes through `submit`, which restores a
run its worker lost (`engine/pool.py`) and tries once more. This layer holds the memory budget
of runs (`admission.py`); training steps, sampling and saves are `runs.py`'s, the checkpoint
rows and folders `run_checkpoints.py`'s. It knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from frontier_signal.backend import models
from frontier_signal.engine import operations as ops
from frontier_signal.engine.errors import RunNotHeld
from frontier_signal.engine.types import CheckpointKind
from frontier_signal.engine.worker import EngineWorker
from frontier_signal.service import files
from frontier_signal.service.admission import ESTIMATE_KEY, MemoryBudget
from frontier_signal.service.errors import InvalidRequest, NotFound, RateLimited, Unavailable
from frontier_signal.service.run_checkpoints import RunCheckpoints
from frontier_signal.service.run_spec import RunSpec, spec_columns
from frontier_signal.service.store import new_id
from frontier_signal.service.tables import Run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModelEntry:
    """A base model a caller may name, and whether the engine holds it in memory now."""

    id: str
    loaded: bool


def effective_settings(spec: RunSpec, dtype: str) -> dict:
    """What really runs, for the run status (the seed's options may not all exist here)."""
    kind = spec.optimizer.kind
    optimizer = {
        "adamw_8bit": "adamw_8bit (moments in 8 bits: block-wise float8, fp32 math)",
        "adamw": "adamw (fp32 moments)",
    }.get(kind, kind)
    if spec.bf16 and dtype != "bfloat16":
        dtype = f"{dtype} (this device has no fast bf16)"
    elif not spec.bf16 and dtype == "bfloat16":
        dtype = "bfloat16 (the base model is shared; LoRA weights and optimizer state are fp32)"
    # A bool, as the run asked (a batch over the activation budget is checkpointed anyway).
    return {
        "dtype": dtype,
        "optimizer": optimizer,
        "gradient_checkpointing": spec.gradient_checkpointing,
    }


class RunLifecycle(RunCheckpoints):
    """Runs in the engine worker: the lifecycle half of `RunService` (its base class)."""

    worker: EngineWorker
    memory: MemoryBudget
    _loading: dict[str, asyncio.Future]
    _tokenizers: dict[str, Any]

    def tokenizer(self, base_model: str) -> Any:
        """A tokenizer of our own for this thread (the engine thread keeps its own)."""
        if base_model not in self._tokenizers:
            self._tokenizers[base_model] = models.load_tokenizer(base_model)
        return self._tokenizers[base_model]

    async def submit(self, op: Any, key: str = "", owner: str = "", on_token: Any = None) -> Any:
        """Run a typed engine operation through the worker (after earlier work of `key`).

        A worker that answers that it does not hold the run (it restarted after a crash, or
        the run's worker died: `engine/pool.py`) gets the run restored on a live worker from
        its newest training checkpoint, then the operation once more."""
        try:
            return await self.worker.submit(op, key=key, owner=owner, on_token=on_token)
        except RunNotHeld as exc:
            row = await asyncio.to_thread(self.store.get_run, exc.run_id)
            if row is None or row.status != "active":
                raise NotFound(f"no run {exc.run_id!r}: it does not exist") from None
            logger.warning("run %s is on no live worker: restoring it", exc.run_id)
            loading = self._loading.get(row.id)
            if loading is not None and loading.done():
                del self._loading[row.id]
            await self.ensure_loaded(row)
            return await self.worker.submit(op, key=key, owner=owner, on_token=on_token)

    # ----- base models ---------------------------------------------------------------------
    def base_models(self) -> list[str]:
        """The registered base models, the only ones a caller may name: the built-ins and
        models.json (the engine's registry), the startup models and the operator's
        `model_dirs` folders. No other local folder is a base model: a checkpoint folder of
        another tenant must not become one by its path."""
        names = list(self.worker.info().models)
        for name in [*self.settings.models, *map(str, self.settings.model_dirs)]:
            if name not in names:
                names.append(name)
        return names

    def check_base_model(self, base_model: str) -> None:
        """NotFound (naming the available ones) for a base model that is not registered."""
        available = self.base_models()
        if base_model not in available:
            raise NotFound(
                f"unknown base model {base_model!r}. Available models: {', '.join(available)} "
                "(an operator registers more in models.json or with --model-dir)"
            )

    def list_models(self) -> list[BaseModelEntry]:
        """Every base model a caller may name, and whether it is loaded."""
        loaded = set(self.worker.info().loaded_models)
        return [BaseModelEntry(name, name in loaded) for name in self.base_models()]

    # ----- create and delete ---------------------------------------------------------------
    async def create_run(self, spec: RunSpec, run_id: str | None = None) -> Run:
        """A new run of `spec` (its owner is `spec.tenant_id`); a seed is picked if it has none."""
        tenant_id = spec.tenant_id
        runs = await asyncio.to_thread(self.store.list_runs, tenant_id)
        if len(runs) >= self.settings.max_runs_per_tenant:
            raise RateLimited(
                f"this key already has {len(runs)} active runs (the limit is "
                f"{self.settings.max_runs_per_tenant}); delete one first",
                retry_after=5,
            )
        self.check_base_model(spec.base_model)
        if spec.seed is None:
            spec = replace(spec, seed=random.randrange(2**31))
        run_id = run_id or new_id("run")
        if await asyncio.to_thread(self.store.get_run, run_id) is not None:
            raise InvalidRequest(f"a run {run_id!r} already exists")
        need = await self.memory_needed(spec)
        self.memory.reserve(tenant_id, run_id, need)
        try:
            return await self._create(spec, run_id, need)
        except BaseException:
            self.memory.release(run_id)
            raise

    async def memory_needed(self, spec: RunSpec) -> int:
        """The engine's estimate of a run's memory (loads its base model if needed)."""
        run_config = replace(spec, seed=spec.seed or 0).engine_config()
        estimate: ops.RunBytes = await self.submit(ops.EstimateRunBytes(run_config))
        return estimate.bytes

    async def check_memory(self, spec: RunSpec) -> None:
        """Refuse now (4xx, saying what is needed and what is left) a run that would not fit
        the memory budget; `create_run` checks again and holds the memory."""
        self.memory.check(spec.tenant_id, await self.memory_needed(spec))

    async def _create(self, spec: RunSpec, run_id: str, need: int) -> Run:
        folder = files.step_folder(self.data_dir, run_id, 0)
        created = await self.submit(
            ops.CreateRun(run_id, spec.engine_config(), str(folder)), run_id
        )
        self.checkpoint_written(created.sampler)
        now = time.time()
        row = Run(
            id=run_id,
            **spec_columns(spec),
            effective=effective_settings(spec, created.dtype) | {ESTIMATE_KEY: need},
            status="active",
            step=0,
            created_at=now,
            updated_at=now,
        )
        self._loading[run_id] = _done_future()  # in the engine before its row is visible
        try:
            await asyncio.to_thread(self.store.add_run, row)
        except BaseException:
            self._loading.pop(run_id, None)
            raise
        await asyncio.to_thread(self.record_checkpoint, run_id, "sampler", 0, folder)
        return row

    async def delete_run(self, tenant_id: str, run_id: str) -> None:
        """Mark the run deleted, free its memory budget and its place in the engine."""
        await asyncio.to_thread(self.run_row, tenant_id, run_id)
        await asyncio.to_thread(self.store.update_run, run_id, status="deleted")
        self.memory.release(run_id)
        # Held by a worker though never loaded here: another API process loaded it.
        if run_id in self._loading or run_id in self.worker.info().runs:
            self._loading.pop(run_id, None)
            await self.submit(ops.DeleteRun(run_id), run_id)

    # ----- load, restore, unload -----------------------------------------------------------
    async def ensure_loaded(self, row: Run) -> None:
        """Load a run into the engine once (after a restart: from its newest training
        checkpoint; a gradient that was never applied is lost). Callers share one load: a
        caller that leaves does not cancel it for the others, and a load that fails or is
        cancelled is forgotten, so the next request tries again."""
        future = self._loading.get(row.id)
        if future is None:
            future = asyncio.ensure_future(self._restored(row))
            self._loading[row.id] = future
            future.add_done_callback(lambda done: self._forget_failed_load(row.id, done))
        await asyncio.shield(future)

    def _forget_failed_load(self, run_id: str, done: asyncio.Future) -> None:
        if (done.cancelled() or done.exception() is not None) and self._loading.get(run_id) is done:
            del self._loading[run_id]

    async def _restored(self, row: Run) -> None:
        """Restore, then align the stored history, before any waiter of the run goes on."""
        step = await self.restore(row)
        await asyncio.to_thread(self._after_restore, row, step)

    def reconcile_after_restart(self) -> None:
        """At start: each run's step becomes that of its newest training checkpoint (what it
        will resume from), so status, metrics and kept steps never promise lost work; and the
        stored results of operations begun after that checkpoint are dropped, so a retry with
        the same idempotency key runs again instead of replaying an undone step."""
        for row in self.store.list_runs():
            try:
                newest = self.newest_training_checkpoint(row.id)
            except Unavailable as exc:  # left as it is: its requests get this error meanwhile
                logger.error("%s", exc)
                continue
            self._after_restore(row, newest.step if newest else 0)
            since = newest.created_at if newest else row.created_at
            dropped = self.store.forget_results_since(row.id, since)
            if dropped:
                logger.warning(
                    "run %s: %d stored results were undone by the restart; retries run afresh",
                    row.id,
                    dropped,
                )

    async def restore(self, row: Run) -> int:
        """Load a run into the engine from its newest training checkpoint (fresh when none;
        the optimizer hyperparameters stay the run's own: a checkpoint may predate them);
        returns the step it resumed at. `ensure_loaded` does this once per run."""
        newest = await asyncio.to_thread(self.newest_training_checkpoint, row.id)
        # Shared storage: the newest checkpoint is downloaded here first if need be.
        folder = await asyncio.to_thread(self.storage.local, newest.path) if newest else ""
        op = ops.RestoreRun(row.id, row.spec.engine_config(), folder)
        restored: ops.RunRestored = await self.submit(op, row.id)
        return restored.step

    def _after_restore(self, row: Run, step: int) -> None:
        row = self.store.get_run(row.id) or row  # another API process may have moved it
        if step != row.step:
            logger.warning("run %s resumed at step %d (it had reached %d)", row.id, step, row.step)
            self.drop_history_after(row.id, step)

    async def save_checkpoint(
        self, run_id: str, folder: Path, kind: CheckpointKind
    ) -> ops.SavedCheckpoint:
        """Write a `training` or `sampler` checkpoint of a loaded run (counted in the metrics)."""
        op = ops.SaveCheckpoint(run_id, str(folder), kind)
        saved: ops.SavedCheckpoint = await self.submit(op, run_id)
        self.checkpoint_written(saved)
        return saved

    async def shutdown(self) -> None:
        """Write a training checkpoint for every loaded run that moved since its last one."""
        for run_id in list(self._loading):
            row = await asyncio.to_thread(self.store.get_run, run_id)
            if row is None or row.status != "active":
                continue
            try:
                await self._checkpoint_if_moved(row, "shutdown")
            except Exception:
                logger.exception("could not write the shutdown checkpoint of run %s", run_id)

    async def _checkpoint_if_moved(self, row: Run, reason: str) -> None:
        newest = await asyncio.to_thread(self.newest_training_checkpoint, row.id)
        if (newest.step if newest else 0) == row.step:
            return
        checkpoint_id = new_id("ckpt")
        folder = files.checkpoint_folder(self.data_dir, row.id, checkpoint_id)
        await self.save_checkpoint(row.id, folder, "training")
        name = f"{reason}-step-{row.step}"
        record = self.record_checkpoint
        await asyncio.to_thread(record, row.id, "training", row.step, folder, checkpoint_id, name)
        await asyncio.to_thread(self.prune_automatic_checkpoints, row.id)

    async def unload(self, tenant_id: str, run_id: str) -> None:
        """Free a run's memory in the engine. A run that moved since its last training
        checkpoint gets one first, so the next use resumes it exactly (a gradient not yet
        applied is lost)."""
        row = await asyncio.to_thread(self.run_row, tenant_id, run_id)
        if run_id not in self._loading:
            return
        await self.ensure_loaded(row)
        moved = await asyncio.to_thread(self.store.get_run, run_id)
        await self._checkpoint_if_moved(moved or row, "unload")
        del self._loading[run_id]
        self._pending_loss.pop(run_id, None)
        await self.submit(ops.DeleteRun(run_id), run_id)


def _done_future() -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
