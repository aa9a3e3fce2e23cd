"""The engine's checkpoint side: save, load and export a run's weights.

`EngineCheckpoints` is a part of `Engine` (engine/engine.py), split out because checkpoints are
their own concept: `training` checkpoints resume a run exactly (adapter, optimizer state,
step), `sampler` ones hold the adapter only; exports write a merged transformers folder or
GGUFs. The file formats live in backend/checkpoints.py; this is the run-level logic (which run,
which base model, a failed load leaves the run as it was). Not thread-safe; no HTTP, no SQL.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from frontier_signal.backend import checkpoints, models
from frontier_signal.backend.training import RunState
from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import (
    CheckpointInfo,
    CheckpointKind,
    OptimizerSpec,
    RunConfig,
    RunInfo,
)


class EngineCheckpoints:
    """Checkpoints and exports. `Engine` holds the runs these methods read and the methods they
    call (`_run`, `get_run`, `create_run`, `delete_run`)."""

    _runs: dict[str, RunState]

    if TYPE_CHECKING:  # Engine's methods (engine/engine.py)

        def _run(self, run_id: str) -> RunState: ...
        def get_run(self, run_id: str) -> RunInfo: ...
        def create_run(self, config: RunConfig, run_id: str | None = None) -> RunInfo: ...
        def delete_run(self, run_id: str) -> None: ...

    def save_checkpoint(
        self,
        run_id: str,
        path: str | Path,
        kind: CheckpointKind = "training",
        compact: bool = False,
    ) -> CheckpointInfo:
        """Write a `training` (resumes exactly) or `sampler` (adapter only) checkpoint.

        `compact` (a per-step sampler copy): the weights in bf16 where the run computes in bf16,
        which are the values its forward and decode use; fp32 otherwise. Half the bytes to
        write, sync and hash at every optimizer step."""
        if kind not in ("training", "sampler"):
            raise InvalidInputError(
                f"checkpoint kind must be 'training' or 'sampler', got {kind!r}"
            )
        run = self._run(run_id)
        return checkpoints.save_checkpoint(
            Path(path),
            run.adapter,
            run.config,
            run.step,
            kind,
            run.optimizer if kind == "training" else None,
            weights_dtype=torch.bfloat16
            if compact and kind == "sampler" and run.base.dtype == torch.bfloat16
            else torch.float32,
        )

    def load_checkpoint(
        self, run_id: str, path: str | Path, with_optimizer: bool = True
    ) -> RunInfo:
        """Load a checkpoint into an existing run; the adapter layout comes from the checkpoint.

        A sampler checkpoint (or `with_optimizer=False`) loads weights only and resets the
        optimizer state. The run's pending gradient is dropped.
        """
        run = self._run(run_id)
        adapter_config, meta, tensors = checkpoints.read_checkpoint(Path(path))
        spec = replace(
            checkpoints.spec_from_adapter_config(adapter_config), seed=run.config.lora.seed
        )
        saved = checkpoints.run_config_from_meta(meta, run.config.base_model, spec)
        same = models.canonical_name(saved.base_model) == run.base.name
        if not same and meta:
            raise InvalidInputError(
                f"checkpoint is for base model {saved.base_model!r}, the run "
                f"uses {run.config.base_model!r}"
            )
        config = replace(run.config, lora=spec)
        fresh = RunState.create(f"{run_id}#loading", config, run.base)
        fresh.adapter.detach()
        try:
            checkpoints.load_adapter_weights(fresh.adapter, tensors)
            if with_optimizer and checkpoints.checkpoint_kind(meta) == "training":
                checkpoints.load_optimizer_state(Path(path), fresh.adapter, fresh.optimizer)
        except Exception:
            fresh.release()
            raise
        run.release()
        fresh.run_id, fresh.adapter.key = run_id, run_id
        fresh.step = int(meta.get("step", 0))
        fresh.adapter.attach()
        self._runs[run_id] = fresh
        return self.get_run(run_id)

    def create_run_from_checkpoint(
        self,
        path: str | Path,
        run_id: str | None = None,
        with_optimizer: bool = True,
        optimizer: OptimizerSpec | None = None,
    ) -> RunInfo:
        """A new run whose config, weights, step (and optimizer state) come from a checkpoint."""
        adapter_config, meta, _ = checkpoints.read_checkpoint(Path(path))
        spec = checkpoints.spec_from_adapter_config(adapter_config)
        config = checkpoints.run_config_from_meta(
            meta, adapter_config.get("base_model_name_or_path") or "", spec
        )
        if optimizer is not None:
            config = replace(config, optimizer=optimizer)
        info = self.create_run(config, run_id)
        try:
            return self.load_checkpoint(info.run_id, path, with_optimizer)
        except Exception:
            self.delete_run(info.run_id)
            raise

    def export_merged(self, run_id: str, path: str | Path) -> int:
        """Write a transformers folder with the run's LoRA folded in; returns its size in bytes."""
        run = self._run(run_id)
        return checkpoints.export_merged(Path(path), run.config.base_model, run.adapter)

    def export_gguf(self, run_id: str, path: str | Path, gguf_type: str = "f16") -> dict[str, int]:
        """Write GGUFs for llama.cpp / Ollama (merged model, base model, LoRA adapter; see
        backend/gguf_export.py); returns {file name: size in bytes}.

        Raises:
            InvalidInputError: an unknown type, or a base model GGUF cannot hold.
        """
        from frontier_signal.backend.gguf_export import QUANT_TYPES

        if gguf_type not in QUANT_TYPES:
            raise InvalidInputError(
                f"GGUF type must be one of {', '.join(QUANT_TYPES)}, got {gguf_type!r}"
            )
        run = self._run(run_id)
        try:
            return checkpoints.export_gguf(Path(path), run.config, run.adapter, run.step, gguf_type)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
