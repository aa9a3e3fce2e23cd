"""The run service: the rules of runs, training, sampling and checkpoints, for every API face.

Routes call these coroutines with plain arguments and a tenant id; the service checks ownership
(another tenant's run is simply "not found"), converts to engine types, submits typed operations
(`engine/operations.py`) to the engine worker, records what happened in the store, and keeps the
files durable:
- sampler weights after every optimizer step, pruned by the retention policy (step 0, the last
  `sampler_keep_last` steps and every `sampler_keep_every`-th step are kept);
- a training checkpoint every `checkpoint_every` steps, at every `save_state`, and at shutdown;
- runs load lazily after a restart, from their newest training checkpoint.
It knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from frontier_signal.backend import models
from frontier_signal.engine import operations as ops
from frontier_signal.engine.errors import RunNotHeld
from frontier_signal.engine.types import (
    ForwardBackwardResult,
    SamplingParams,
)
from frontier_signal.engine.worker import EngineWorker
from frontier_signal.service import cleanup, files
from frontier_signal.service.admission import ESTIMATE_KEY, MemoryBudget
from frontier_signal.service.errors import InvalidRequest, NotFound, RateLimited, UpstreamError
from frontier_signal.service.run_spec import RunSpec, spec_columns
from frontier_signal.service.sampling import sample_requests
from frontier_signal.service.settings import ServiceSettings
from frontier_signal.service.storage import CheckpointStorage
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import Checkpoint, Metric, Run
from frontier_signal.service.telemetry import Telemetry

# save_state modes that write GGUFs for llama.cpp / Ollama → the weights' type.
GGUF_MODES = {"gguf": "f16", "gguf-q8_0": "q8_0"}

logger = logging.getLogger(__name__)


@dataclass
class PendingLoss:
    """Loss of the gradient not applied yet, for the metrics row of the next optimizer step."""

    loss_sum: float = 0.0
    weight_sum: float = 0.0
    tokens: int = 0
    seconds: float = 0.0  # forward_backward time (submit to result) of this step so far


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


class RunService:
    """Runs, training and sampling on top of the engine worker and the store."""

    def __init__(self, settings: ServiceSettings, store: Store, worker: EngineWorker):
        self.settings = settings
        self.store = store
        self.worker = worker
        self.data_dir = Path(settings.data_dir)
        self.storage = CheckpointStorage(settings.storage_url, self.data_dir)
        self._loading: dict[str, asyncio.Future] = {}
        self._pending_loss: dict[str, PendingLoss] = {}
        self._tokenizers: dict[str, object] = {}
        self.telemetry: Telemetry | None = None  # set by the app: checkpoint writes
        self.memory = MemoryBudget.from_settings(settings)
        for row in store.list_runs():
            self.memory.hold(row.tenant_id, row.id, int((row.effective or {}).get(ESTIMATE_KEY, 0)))

    def tokenizer(self, base_model: str):
        """A tokenizer of our own for this thread (the engine thread keeps its own)."""
        if base_model not in self._tokenizers:
            self._tokenizers[base_model] = models.load_tokenizer(base_model)
        return self._tokenizers[base_model]

    async def submit(self, op, key: str = "", owner: str = "", on_token=None):
        """Run a typed engine operation through the worker (after earlier work of `key`).

        A worker that answers that it does not hold the run (it restarted after a crash, or
        the run's worker died: `engine/pool.py`) gets the run restored on a live worker from
        its newest training checkpoint, then the operation once more."""
        try:
            return await self.worker.submit(op, key=key, owner=owner, on_token=on_token)
        except RunNotHeld as exc:
            row = self.store.get_run(exc.run_id)
            if row is None or row.status != "active":
                raise NotFound(f"no run {exc.run_id!r}: it does not exist") from None
            logger.warning("run %s is on no live worker: restoring it", exc.run_id)
            if (
                isinstance(self._loading.get(row.id), asyncio.Future)
                and self._loading[row.id].done()
            ):
                del self._loading[row.id]
            await self.ensure_loaded(row)
            return await self.worker.submit(op, key=key, owner=owner, on_token=on_token)

    # ----- models and runs ---------------------------------------------------------------
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
        available = self.base_models()
        if base_model not in available:
            raise NotFound(
                f"unknown base model {base_model!r}. Available models: {', '.join(available)} "
                "(an operator registers more in models.json or with --model-dir)"
            )

    def list_models(self) -> list[dict]:
        loaded = set(self.worker.info().loaded_models)
        return [{"id": name, "loaded": name in loaded} for name in self.base_models()]

    def run_row(self, tenant_id: str, run_id: str) -> Run:
        row = self.store.get_run(run_id)
        if row is None or row.tenant_id != tenant_id or row.status != "active":
            raise NotFound(f"no run {run_id!r}: it does not exist or belongs to another key")
        return row

    async def create_run(self, spec: RunSpec, run_id: str | None = None) -> Run:
        """A new run of `spec` (its owner is `spec.tenant_id`); a seed is picked if it has none."""
        tenant_id = spec.tenant_id
        runs = self.store.list_runs(tenant_id)
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
        if self.store.get_run(run_id) is not None:
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
        return (await self.submit(ops.EstimateRunBytes(run_config))).bytes

    async def check_memory(self, spec: RunSpec) -> None:
        """Refuse now (4xx, saying what is needed and what is left) a run that would not fit
        the memory budget; `create_run` checks again and holds the memory."""
        self.memory.check(spec.tenant_id, await self.memory_needed(spec))

    async def _create(self, spec: RunSpec, run_id: str, need: int) -> Run:
        folder = str(files.step_folder(self.data_dir, run_id, 0))
        created = await self.submit(ops.CreateRun(run_id, spec.engine_config(), folder), run_id)
        self.checkpoint_written(created.sampler)
        dtype = created.dtype
        now = time.time()
        row = Run(
            id=run_id,
            **spec_columns(spec),
            effective=effective_settings(spec, dtype) | {ESTIMATE_KEY: need},
            status="active",
            step=0,
            created_at=now,
            updated_at=now,
        )
        self.store.add_run(row)
        self._loading[run_id] = _done_future()
        self.record_checkpoint(run_id, "sampler", 0, files.step_folder(self.data_dir, run_id, 0))
        return row

    async def delete_run(self, tenant_id: str, run_id: str) -> None:
        self.run_row(tenant_id, run_id)
        self.store.update_run(run_id, status="deleted")
        self.memory.release(run_id)
        # Held by a worker though never loaded here: another API process loaded it.
        if run_id in self._loading or run_id in self.worker.info().runs:
            self._loading.pop(run_id, None)
            await self.submit(ops.DeleteRun(run_id), run_id)

    async def ensure_loaded(self, row: Run) -> None:
        """Load a run into the engine once (after a restart: from its newest training
        checkpoint; a gradient that was never applied is lost)."""
        future = self._loading.get(row.id)
        if future is None:
            future = asyncio.ensure_future(self.restore(row))
            self._loading[row.id] = future
            try:
                step = await future
            except Exception:
                del self._loading[row.id]
                raise
            self._after_restore(row, step)
        await future

    def reconcile_after_restart(self) -> None:
        """At start: each run's step becomes that of its newest training checkpoint (what it
        will resume from), so status, metrics and kept steps never promise lost work; and the
        stored results of operations begun after that checkpoint are dropped, so a retry with
        the same idempotency key runs again instead of replaying an undone step."""
        for row in self.store.list_runs():
            newest = self.newest_training_checkpoint(row.id)
            self._after_restore(row, newest.step if newest else 0)
            since = newest.created_at if newest else row.created_at
            dropped = self.store.forget_results_since(row.id, since)
            if dropped:
                logger.warning(
                    "run %s: %d stored results were undone by the restart; retries run afresh",
                    row.id,
                    dropped,
                )

    def newest_training_checkpoint(self, run_id: str) -> Checkpoint | None:
        """The training checkpoint written last (not the highest step: after a Tinker
        `load_weights` of an earlier state, the newest one holds that state)."""
        saved = [
            c
            for c in self.store.list_checkpoints(run_id, "training")
            if self.storage.exists(c.path)
        ]
        return max(saved, key=lambda c: c.created_at, default=None)

    async def restore(self, row: Run) -> int:
        """Load a run into the engine from its newest training checkpoint (fresh when none;
        the optimizer hyperparameters stay the run's own: a checkpoint may predate them);
        returns the step it resumed at. `ensure_loaded` does this once per run."""
        newest = self.newest_training_checkpoint(row.id)
        # Shared storage: the newest checkpoint is downloaded here first if need be.
        folder = self.storage.local(newest.path) if newest else ""
        op = ops.RestoreRun(row.id, row.spec.engine_config(), folder)
        return (await self.submit(op, row.id)).step

    def _after_restore(self, row: Run, step: int) -> None:
        row = self.store.get_run(row.id) or row  # another API process may have moved it
        if step != row.step:
            logger.warning("run %s resumed at step %d (it had reached %d)", row.id, step, row.step)
            self._pending_loss.pop(row.id, None)
            self.store.update_run(row.id, step=step)
            self.store.delete_metrics_after(row.id, step)
            for checkpoint in self.store.list_checkpoints(row.id, "sampler"):
                if checkpoint.step > step:
                    self.remove_files(checkpoint.path)
                    self.store.delete_checkpoint(checkpoint.id)

    # ----- training ----------------------------------------------------------------------
    async def forward_backward(
        self, tenant_id: str, run_id: str, batch: list[dict], accumulate: bool
    ) -> dict:
        row = self.run_row(tenant_id, run_id)
        if not batch:
            raise InvalidRequest("batch is empty: send at least one example")
        await self.ensure_loaded(row)
        max_length = row.max_seq_length
        op = ops.ForwardBackward(
            run_id,
            row.base_model,
            examples=list(batch),
            max_length=max_length,
            reduction="mean",
            accumulate=accumulate,
        )
        started = time.monotonic()
        result = await self.submit(op, run_id, row.tenant_id)
        self.record_pending_loss(run_id, result, accumulate, time.monotonic() - started)
        return {
            "loss": result.loss,
            "step": result.step,
            "grad_norm": result.grad_norm,
            "grad_stats": {
                "max_abs": result.grad_max_abs,
                "num_params": result.num_params,
                "nonfinite": result.grad_nonfinite,
            },
            "tokens": result.num_tokens,
        }

    def record_pending_loss(
        self,
        run_id: str,
        result: ForwardBackwardResult,
        accumulate: bool = True,
        seconds: float = 0.0,
    ) -> None:
        """Remember the loss of a gradient not applied yet, for the next step's metrics row
        (`seconds`: how long that forward_backward took, for the step's tokens/s)."""
        pending = self._pending_loss.get(run_id) if accumulate else None
        pending = pending or PendingLoss()
        pending.loss_sum += result.loss_sum
        pending.weight_sum += result.weight_sum
        pending.tokens += result.num_tokens
        pending.seconds += seconds
        self._pending_loss[run_id] = pending

    async def optim_step(
        self,
        tenant_id: str,
        run_id: str,
        learning_rate: float | None,
        overrides: dict[str, float] | None = None,
    ) -> dict:
        """Apply the pending gradient. `overrides` (beta1, beta2, eps, weight_decay,
        grad_clip_norm, learning_rate) set the optimizer for this step only."""
        row = self.run_row(tenant_id, run_id)
        await self.ensure_loaded(row)
        every = self.settings.checkpoint_every
        checkpoint_id = new_id("ckpt")
        op = ops.OptimStep(
            run_id,
            {"learning_rate": learning_rate} | (overrides or {}),
            sampler_folder=files.step_folder_template(self.data_dir, run_id),
            training_folder=str(files.checkpoint_folder(self.data_dir, run_id, checkpoint_id)),
            training_every=every,
        )
        done = await self.submit(op, run_id)
        self.checkpoint_written(done.sampler)
        self.checkpoint_written(done.training)
        result = done.result
        steps_folder = Path(done.sampler.folder)
        training = Path(done.training.folder) if done.training is not None else None
        loss, pending = self._record_step_metric(run_id, done)
        self.store.update_run(run_id, step=result.step)
        # Hashing tens of MiB of weights: off the event loop, so other requests keep flowing.
        await asyncio.to_thread(
            self.record_checkpoint, run_id, "sampler", result.step, steps_folder
        )
        if training is not None:
            await asyncio.to_thread(
                self.record_checkpoint,
                run_id,
                "training",
                result.step,
                training,
                checkpoint_id,
                f"auto-step-{result.step}",
            )
        self._prune_sampler_steps(run_id, result.step)
        if training is not None:
            self.prune_automatic_checkpoints(run_id)
        return {
            "step": result.step,
            "learning_rate": result.learning_rate,
            "grad_norm": result.grad_norm,
            "metrics": {
                "loss": loss,
                "tokens": pending.tokens,
                "clipped": result.clipped,
                "checkpoint_id": checkpoint_id if training is not None else None,
            },
        }

    def _record_step_metric(
        self, run_id: str, done: ops.OptimStepDone
    ) -> tuple[float | None, PendingLoss]:
        """The metrics row of a step: the loss of the gradients it applied, their tokens and the
        time they took; returns (that loss, the pending loss it consumed)."""
        pending = self._pending_loss.pop(run_id, PendingLoss())
        loss = pending.loss_sum / pending.weight_sum if pending.weight_sum else None
        self.store.add_metric(
            Metric(
                run_id=run_id,
                step=done.result.step,
                loss=loss,
                grad_norm=done.result.grad_norm,
                learning_rate=done.result.learning_rate,
                tokens=pending.tokens,
                time=time.time(),
                seconds=pending.seconds + done.seconds,
            )
        )
        return loss, pending

    async def save_checkpoint(self, run_id: str, folder: Path, kind: str) -> ops.SavedCheckpoint:
        """Write a `training` or `sampler` checkpoint of a loaded run (counted in the metrics)."""
        saved = await self.submit(ops.SaveCheckpoint(run_id, str(folder), kind), run_id)  # type: ignore[arg-type]
        self.checkpoint_written(saved)
        return saved

    def checkpoint_written(self, saved: ops.SavedCheckpoint | None) -> None:
        """Tell the metrics what a checkpoint write cost."""
        if saved is not None and self.telemetry is not None:
            self.telemetry.checkpoint_written(saved.kind, saved.seconds, saved.size_bytes)

    def record_checkpoint(
        self,
        run_id: str,
        kind: str,
        step: int,
        folder: Path,
        checkpoint_id: str | None = None,
        name: str | None = None,
    ) -> Checkpoint:
        """Store a checkpoint folder's row (its size and digest: hashing tens of MiB takes a
        while, so call it off the event loop)."""
        size, sha256 = files.folder_digest(folder)
        self.storage.publish(folder)  # shared storage: complete there before it is recorded
        checkpoint = Checkpoint(
            id=checkpoint_id or new_id("ckpt"),
            run_id=run_id,
            name=name or f"{kind}-step-{step}",
            kind=kind,
            step=step,
            path=str(folder),
            size=size,
            sha256=sha256,
            created_at=time.time(),
        )
        return self.store.add_checkpoint(checkpoint)

    def remove_files(self, folder: str) -> None:
        """Remove a checkpoint folder: the local copy and the shared one."""
        files.remove(Path(folder))
        self.storage.remove(folder)

    def _prune_sampler_steps(self, run_id: str, current: int) -> None:
        sampler = self.store.list_checkpoints(run_id, "sampler")
        keep = files.kept_steps(
            [c.step for c in sampler],
            current,
            self.settings.sampler_keep_last,
            self.settings.sampler_keep_every,
        )
        for checkpoint in sampler:
            if checkpoint.step not in keep:
                self.remove_files(checkpoint.path)
                self.store.delete_checkpoint(checkpoint.id)

    def prune_automatic_checkpoints(self, run_id: str) -> int:
        return cleanup.prune_automatic_checkpoints(
            self.store, run_id, self.settings.keep_auto_checkpoints, self.storage
        )

    def kept_steps(self, tenant_id: str, run_id: str) -> list[int]:
        self.run_row(tenant_id, run_id)
        return sorted({c.step for c in self.store.list_checkpoints(run_id, "sampler")})

    def sampler_path(self, run_id: str, step: int) -> str:
        for checkpoint in self.store.list_checkpoints(run_id, "sampler"):
            if checkpoint.step == step and self.storage.exists(checkpoint.path):
                return self.storage.local(checkpoint.path)
        kept = sorted({c.step for c in self.store.list_checkpoints(run_id, "sampler")})
        raise NotFound(
            f"step {step} of run {run_id!r} is not kept; kept steps: {kept} (policy: step 0, "
            f"the last {self.settings.sampler_keep_last} steps and every "
            f"{self.settings.sampler_keep_every}th step)"
        )

    # ----- sampling ----------------------------------------------------------------------
    async def sample_requests(
        self,
        tenant_id: str,
        run_id: str,
        prompts: list[str],
        params: SamplingParams,
        step: int | None,
        on_token=None,
    ) -> tuple[list, int]:
        """Sample raw-text continuations; returns (engine results, the step sampled)."""
        row = self.run_row(tenant_id, run_id)
        await self.ensure_loaded(row)
        checkpoint = "" if step is None else self.sampler_path(run_id, step)
        sampled_step = row.step if step is None else step
        requests = sample_requests(run_id, prompts, params, checkpoint=checkpoint)
        sampled = await self.submit(
            ops.Sample(row.base_model, requests), run_id, tenant_id, on_token
        )
        return sampled.results, sampled_step

    async def embeddings(
        self, tenant_id: str, run_id: str, texts: list[str], step: int | None
    ) -> tuple[list[list[float]], int]:
        row = self.run_row(tenant_id, run_id)
        await self.ensure_loaded(row)
        checkpoint = "" if step is None else self.sampler_path(run_id, step)
        embedded = await self.submit(ops.Embed(run_id, list(texts), checkpoint), run_id)
        return embedded.vectors, row.step if step is None else step

    # ----- checkpoints -------------------------------------------------------------------
    async def save_state(
        self, tenant_id: str, run_id: str, mode: str, push_to_hub: bool, hub_model_id: str | None
    ) -> dict:
        row = self.run_row(tenant_id, run_id)
        if push_to_hub and not hub_model_id:
            raise InvalidRequest("push_to_hub=True needs hub_model_id ('user/model-name')")
        if push_to_hub:
            files.check_repo_id(hub_model_id)
        await self.ensure_loaded(row)
        checkpoint_id = new_id("ckpt")
        folder = files.checkpoint_folder(self.data_dir, run_id, checkpoint_id)

        written: dict[str, int] = {}
        if mode == "merged" or mode in GGUF_MODES:
            export = ops.Export(
                run_id,
                str(folder),
                "merged" if mode == "merged" else "gguf",
                GGUF_MODES.get(mode, "f16"),
            )
            exported = await self.submit(export, run_id)
            step, written = exported.step, exported.files
        else:
            step = (await self.save_checkpoint(run_id, folder, "training")).step
        kind = "gguf" if mode in GGUF_MODES else "merged" if mode == "merged" else "training"
        checkpoint = await asyncio.to_thread(
            self.record_checkpoint,
            run_id,
            kind,
            step,
            folder,
            checkpoint_id,
            f"{mode}-step-{step}",
        )
        # The contract (contract-notes, "Shapes"): the folder and its file:// URI. A path gives
        # another tenant nothing: base models are registered names, checkpoint references are
        # checked against the caller's runs.
        path, uri = str(folder), self.storage.uri(folder)
        pushed = False
        if push_to_hub:
            try:
                await asyncio.to_thread(files.push_to_hub, folder, hub_model_id)
                pushed = True
            except Exception as exc:
                raise UpstreamError(
                    f"the {mode} checkpoint is saved locally at {path} (checkpoint_id "
                    f"{checkpoint.id}), but pushing it to the hub as {hub_model_id!r} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        return {
            "checkpoint_id": checkpoint.id,
            "checkpoint_path": path,
            "artifact_uri": uri,
            "mode": mode,
            "step": step,
            "pushed_to_hub": pushed,
            "hub_model_id": hub_model_id,
            "files": written or files.file_sizes(folder),
        }

    def checkpoint(self, tenant_id: str, run_id: str, checkpoint_id: str) -> Checkpoint:
        self.run_row(tenant_id, run_id)
        checkpoint = self.store.get_checkpoint(checkpoint_id)
        readable = checkpoint is not None and self.storage.exists(checkpoint.path)
        if not readable or checkpoint.run_id != run_id:
            raise NotFound(f"run {run_id!r} has no checkpoint {checkpoint_id!r}")
        checkpoint.path = self.storage.local(checkpoint.path)  # a detached row: this copy
        return checkpoint

    async def shutdown(self) -> None:
        """Write a training checkpoint for every loaded run that moved since its last one."""
        for run_id in list(self._loading):
            row = self.store.get_run(run_id)
            if row is None or row.status != "active":
                continue
            try:
                await self._checkpoint_if_moved(row, "shutdown")
            except Exception:
                logger.exception("could not write the shutdown checkpoint of run %s", run_id)

    async def _checkpoint_if_moved(self, row: Run, reason: str) -> None:
        newest = self.newest_training_checkpoint(row.id)
        if (newest.step if newest else 0) == row.step:
            return
        checkpoint_id = new_id("ckpt")
        folder = files.checkpoint_folder(self.data_dir, row.id, checkpoint_id)
        await self.save_checkpoint(row.id, folder, "training")
        self.record_checkpoint(
            row.id, "training", row.step, folder, checkpoint_id, f"{reason}-step-{row.step}"
        )
        self.prune_automatic_checkpoints(row.id)

    def restart_history_at(self, run_id: str, step: int, steps_folder: Path) -> None:
        """After weights were loaded into a run at `step`: the run's step, metrics and
        per-step sampler weights restart there (`steps_folder` holds the loaded weights)."""
        self.store.update_run(run_id, step=step)
        self.store.delete_metrics_after(run_id, step)
        for checkpoint in self.store.list_checkpoints(run_id, "sampler"):
            if checkpoint.step > step:
                self.remove_files(checkpoint.path)
            if checkpoint.step >= step:
                self.store.delete_checkpoint(checkpoint.id)
        self.record_checkpoint(run_id, "sampler", step, steps_folder)
        self._pending_loss.pop(run_id, None)

    async def unload(self, tenant_id: str, run_id: str) -> None:
        """Free a run's memory in the engine. A run that moved since its last training
        checkpoint gets one first, so the next use resumes it exactly (a gradient not yet
        applied is lost)."""
        row = self.run_row(tenant_id, run_id)
        if run_id not in self._loading:
            return
        await self.ensure_loaded(row)
        await self._checkpoint_if_moved(self.store.get_run(run_id) or row, "unload")
        del self._loading[run_id]
        self._pending_loss.pop(run_id, None)
        await self.submit(ops.DeleteRun(run_id), run_id)


def _done_future() -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
