"""The run service: training steps, sampling and saves of runs, for every API face.

Routes call these coroutines with plain arguments and a tenant id; the service checks ownership
(another tenant's run is simply "not found"), converts to engine types, submits typed operations
(`engine/operations.py`) to the engine worker, records what happened in the store, and returns
typed results (`StepResult`, `SavedState`, the engine's `ForwardBackwardResult`) that each face's
schema module renders to its wire shape. `RunService` is built in layers, one concept a module:
- `run_checkpoints.py`: checkpoint rows and folders, retention, lookups;
- `run_lifecycle.py`: create, lazy load and restore, unload, delete, shutdown checkpoints;
- here: forward_backward, optim_step (sampler weights every step, a training checkpoint every
  `checkpoint_every` steps), sampling, embeddings and `save_state`.
It knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frontier_signal.engine import operations as ops
from frontier_signal.engine.types import ForwardBackwardResult, SampleResult, SamplingParams
from frontier_signal.engine.worker import EngineWorker
from frontier_signal.service import files
from frontier_signal.service.admission import ESTIMATE_KEY, MemoryBudget
from frontier_signal.service.errors import InvalidRequest, UpstreamError
from frontier_signal.service.run_lifecycle import BaseModelEntry, RunLifecycle, effective_settings
from frontier_signal.service.sampling import sample_requests
from frontier_signal.service.settings import ServiceSettings
from frontier_signal.service.storage import CheckpointStorage
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import Checkpoint, Metric

__all__ = [
    "GGUF_MODES",
    "BaseModelEntry",
    "PendingLoss",
    "RunService",
    "SavedState",
    "StepResult",
    "effective_settings",
]

# save_state modes that write GGUFs for llama.cpp / Ollama → the weights' type.
GGUF_MODES = {"gguf": "f16", "gguf-q8_0": "q8_0"}


@dataclass
class PendingLoss:
    """Loss of the gradient not applied yet, for the metrics row of the next optimizer step."""

    loss_sum: float = 0.0
    weight_sum: float = 0.0
    tokens: int = 0
    seconds: float = 0.0  # forward_backward time (submit to result) of this step so far


@dataclass(frozen=True)
class StepResult:
    """An applied optimizer step: the new step, its learning rate and gradient norm, the loss
    and tokens of the gradients it applied, and the training checkpoint it wrote (if any)."""

    step: int
    learning_rate: float
    grad_norm: float
    loss: float | None
    tokens: int
    clipped: bool
    checkpoint_id: str | None


@dataclass(frozen=True)
class SavedState:
    """A `save_state`: the checkpoint, where it lies, and what the hub push did."""

    checkpoint_id: str
    checkpoint_path: str
    artifact_uri: str
    mode: str
    step: int
    pushed_to_hub: bool
    hub_model_id: str | None
    files: dict[str, int]


class RunService(RunLifecycle):
    """Runs, training and sampling on top of the engine worker and the store."""

    def __init__(self, settings: ServiceSettings, store: Store, worker: EngineWorker):
        self.settings = settings
        self.store = store
        self.worker = worker
        self.data_dir = Path(settings.data_dir)
        self.storage = CheckpointStorage(settings.storage_url, self.data_dir)
        self._loading: dict[str, asyncio.Future] = {}
        self._pending_loss: dict[str, PendingLoss] = {}
        self._tokenizers: dict[str, Any] = {}
        self.telemetry = None  # set by the app: checkpoint writes
        self.memory = MemoryBudget.from_settings(settings)
        for row in store.list_runs():
            self.memory.hold(row.tenant_id, row.id, int((row.effective or {}).get(ESTIMATE_KEY, 0)))

    # ----- training ----------------------------------------------------------------------
    async def forward_backward(
        self, tenant_id: str, run_id: str, batch: list[dict], accumulate: bool
    ) -> ForwardBackwardResult:
        """Mean-reduced loss of `batch`; its gradient replaces (or, `accumulate`, adds to) the
        pending one."""
        row = await asyncio.to_thread(self.run_row, tenant_id, run_id)
        if not batch:
            raise InvalidRequest("batch is empty: send at least one example")
        await self.ensure_loaded(row)
        op = ops.ForwardBackward(
            run_id,
            row.base_model,
            examples=list(batch),
            max_length=row.max_seq_length,
            reduction="mean",
            accumulate=accumulate,
            token_outputs=False,  # Signal returns the loss, not per-token log-probs
        )
        started = time.monotonic()
        result: ForwardBackwardResult = await self.submit(op, run_id, row.tenant_id)
        self.record_pending_loss(run_id, result, accumulate, time.monotonic() - started)
        return result

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
        overrides: Mapping[str, float | None] | None = None,
    ) -> StepResult:
        """Apply the pending gradient. `overrides` (beta1, beta2, eps, weight_decay,
        grad_clip_norm, learning_rate) set the optimizer for this step only."""
        row = await asyncio.to_thread(self.run_row, tenant_id, run_id)
        await self.ensure_loaded(row)
        checkpoint_id = new_id("ckpt")
        # A setting left None keeps the run's own (the engine skips it the same way).
        settings: dict[str, float | None] = {}
        if learning_rate is not None:
            settings["learning_rate"] = learning_rate
        op = ops.OptimStep(
            run_id,
            settings | dict(overrides or {}),
            sampler_folder=files.step_folder_template(self.data_dir, run_id),
            training_folder=str(files.checkpoint_folder(self.data_dir, run_id, checkpoint_id)),
            training_every=self.settings.checkpoint_every,
        )
        done: ops.OptimStepDone = await self.submit(op, run_id)
        self.checkpoint_written(done.sampler)
        self.checkpoint_written(done.training)
        loss, pending = await self._record_step_metric(run_id, done)
        await asyncio.to_thread(self.store.update_run, run_id, step=done.result.step)
        await self._record_step_checkpoints(run_id, done, checkpoint_id)
        result = done.result
        return StepResult(
            step=result.step,
            learning_rate=result.learning_rate,
            grad_norm=result.grad_norm,
            loss=loss,
            tokens=pending.tokens,
            clipped=result.clipped,
            checkpoint_id=checkpoint_id if done.training is not None else None,
        )

    async def _record_step_metric(
        self, run_id: str, done: ops.OptimStepDone
    ) -> tuple[float | None, PendingLoss]:
        """The metrics row of a step: the loss of the gradients it applied, their tokens and the
        time they took; returns (that loss, the pending loss it consumed)."""
        pending = self._pending_loss.pop(run_id, PendingLoss())
        loss = pending.loss_sum / pending.weight_sum if pending.weight_sum else None
        await asyncio.to_thread(
            self.store.add_metric,
            Metric(
                run_id=run_id,
                step=done.result.step,
                loss=loss,
                grad_norm=done.result.grad_norm,
                learning_rate=done.result.learning_rate,
                tokens=pending.tokens,
                time=time.time(),
                seconds=pending.seconds + done.seconds,
            ),
        )
        return loss, pending

    async def _record_step_checkpoints(
        self, run_id: str, done: ops.OptimStepDone, checkpoint_id: str
    ) -> None:
        """Record the step's sampler weights (and its training checkpoint, if it wrote one),
        then prune both. Hashing tens of MiB of weights: off the event loop, so other requests
        keep flowing."""
        step = done.result.step
        if done.sampler is not None:  # always written: the step named its folder
            sampler = Path(done.sampler.folder)
            await asyncio.to_thread(
                self.record_checkpoint,
                run_id,
                "sampler",
                step,
                sampler,
                digest=_digest(done.sampler),
            )
        if done.training is not None:
            training = Path(done.training.folder)
            name = f"auto-step-{step}"
            await asyncio.to_thread(
                self.record_checkpoint,
                run_id,
                "training",
                step,
                training,
                checkpoint_id,
                name,
                _digest(done.training),
            )
        await asyncio.to_thread(self.prune_sampler_steps, run_id, step)
        if done.training is not None:
            await asyncio.to_thread(self.prune_automatic_checkpoints, run_id)

    # ----- sampling ----------------------------------------------------------------------
    async def sample_requests(
        self,
        tenant_id: str,
        run_id: str,
        prompts: list[str],
        params: SamplingParams,
        step: int | None,
        on_token: Any = None,
    ) -> tuple[list[SampleResult], int]:
        """Sample raw-text continuations; returns (engine results, the step sampled)."""
        row = await asyncio.to_thread(self.run_row, tenant_id, run_id)
        await self.ensure_loaded(row)
        checkpoint = "" if step is None else await self._sampler_path(run_id, step)
        sampled_step = row.step if step is None else step
        requests = sample_requests(run_id, prompts, params, checkpoint=checkpoint)
        op = ops.Sample(row.base_model, requests)
        sampled: ops.Sampled = await self.submit(op, run_id, tenant_id, on_token)
        return sampled.results, sampled_step

    async def embeddings(
        self, tenant_id: str, run_id: str, texts: list[str], step: int | None
    ) -> tuple[list[list[float]], int]:
        """Mean-pooled embeddings of `texts` by the run (at `step`, else its current weights);
        returns (vectors, the step used)."""
        row = await asyncio.to_thread(self.run_row, tenant_id, run_id)
        await self.ensure_loaded(row)
        checkpoint = "" if step is None else await self._sampler_path(run_id, step)
        op = ops.Embed(run_id, list(texts), checkpoint)
        embedded: ops.Embedded = await self.submit(op, run_id)
        return embedded.vectors, row.step if step is None else step

    async def _sampler_path(self, run_id: str, step: int) -> str:
        return await asyncio.to_thread(self.sampler_path, run_id, step)

    # ----- saves ---------------------------------------------------------------------------
    async def save_state(
        self, tenant_id: str, run_id: str, mode: str, push_to_hub: bool, hub_model_id: str | None
    ) -> SavedState:
        """Save the run as a training checkpoint, merged weights or a GGUF (`mode`), then push
        it to the Hugging Face hub if asked."""
        row = await asyncio.to_thread(self.run_row, tenant_id, run_id)
        if push_to_hub:
            if not hub_model_id:
                raise InvalidRequest("push_to_hub=True needs hub_model_id ('user/model-name')")
            files.check_repo_id(hub_model_id)
        await self.ensure_loaded(row)
        checkpoint_id = new_id("ckpt")
        folder = files.checkpoint_folder(self.data_dir, run_id, checkpoint_id)
        step, written = await self._write_state(run_id, mode, folder)
        kind = "gguf" if mode in GGUF_MODES else "merged" if mode == "merged" else "training"
        checkpoint = await asyncio.to_thread(
            self.record_checkpoint, run_id, kind, step, folder, checkpoint_id, f"{mode}-step-{step}"
        )
        if push_to_hub and hub_model_id:
            await self._push(checkpoint, mode, hub_model_id)
        # The contract (contract-notes, "Shapes"): the folder and its file:// URI. A path gives
        # another tenant nothing: base models are registered names, checkpoint references are
        # checked against the caller's runs.
        return SavedState(
            checkpoint_id=checkpoint.id,
            checkpoint_path=str(folder),
            artifact_uri=self.storage.uri(folder),
            mode=mode,
            step=step,
            pushed_to_hub=push_to_hub,
            hub_model_id=hub_model_id,
            files=written or files.file_sizes(folder),
        )

    async def _write_state(self, run_id: str, mode: str, folder: Path) -> tuple[int, dict]:
        """Write the run's state in `mode` into `folder`; returns (its step, the files an
        export wrote: empty for a training checkpoint)."""
        if mode == "merged" or mode in GGUF_MODES:
            export = ops.Export(
                run_id,
                str(folder),
                "merged" if mode == "merged" else "gguf",
                GGUF_MODES.get(mode, "f16"),
            )
            exported: ops.Exported = await self.submit(export, run_id)
            return exported.step, exported.files
        return (await self.save_checkpoint(run_id, folder, "training")).step, {}

    async def _push(self, checkpoint: Checkpoint, mode: str, hub_model_id: str) -> None:
        """Push a saved checkpoint to the hub (UpstreamError saying where it is kept)."""
        try:
            await asyncio.to_thread(files.push_to_hub, Path(checkpoint.path), hub_model_id)
        except Exception as exc:
            raise UpstreamError(
                f"the {mode} checkpoint is saved locally at {checkpoint.path} (checkpoint_id "
                f"{checkpoint.id}), but pushing it to the hub as {hub_model_id!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None


def _digest(saved: ops.SavedCheckpoint) -> tuple[int, str] | None:
    """The (size, sha256) the engine computed while it wrote the folder, if it did."""
    return (saved.size_bytes, saved.sha256) if saved.sha256 else None
