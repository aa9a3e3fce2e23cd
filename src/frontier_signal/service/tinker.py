"""The Tinker face's rules on top of `RunService`: one run = one Tinker "model".

Tinker semantics differ from the Signal face on purpose (contract notes): losses are summed over
tokens, gradients accumulate over every forward_backward until `optim_step`, and each step takes
its full AdamParams (weight decay and clipping 0 unless sent). Runs, checkpoints and tenants are
the Signal face's own rows, so a run made here is listed there and the reverse.

`TinkerService` holds models, training, training runs and sampling; its base class
`TinkerCheckpoints` (`tinker_checkpoints.py`) the checkpoints, and `tinker_paths.py` how they are
named. Answers are typed (`ModelInfo`, `TrainingRunInfo`, the run service's `StepResult`, engine
results, store rows); the Tinker schema (`server/schemas/tinker_outputs.py`) renders them. It
knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from frontier_signal.engine import operations as ops
from frontier_signal.engine.types import (
    Datum,
    ForwardBackwardResult,
    SampleResult,
    SamplingParams,
)
from frontier_signal.service.errors import InvalidRequest, NotFound
from frontier_signal.service.run_spec import RunSpec
from frontier_signal.service.runs import RunService, StepResult
from frontier_signal.service.sampling import sample_requests
from frontier_signal.service.signing import UrlSigner
from frontier_signal.service.tables import Checkpoint, Run
from frontier_signal.service.tinker_checkpoints import LOADED_PREFIX, SignedUrls, TinkerCheckpoints
from frontier_signal.service.tinker_paths import CheckpointRef, checkpoint_path, parse_path

__all__ = [
    "LOADED_PREFIX",
    "CheckpointRef",
    "ModelInfo",
    "SignedUrls",
    "TinkerService",
    "TrainingRunInfo",
    "TrainingRunPage",
    "checkpoint_path",
    "parse_path",
]


@dataclass(frozen=True)
class ModelInfo:
    """A Tinker model: its id and the run it is."""

    model_id: str
    spec: RunSpec


@dataclass(frozen=True)
class TrainingRunInfo:
    """A training run as Tinker lists it: the run and its newest checkpoint of each kind."""

    run: Run
    last_checkpoint: Checkpoint | None
    last_sampler_checkpoint: Checkpoint | None


@dataclass(frozen=True)
class TrainingRunPage:
    """One page of a tenant's training runs, newest first, and how many there are."""

    runs: list[TrainingRunInfo]
    offset: int
    limit: int
    total_count: int


class TinkerService(TinkerCheckpoints):
    """Tinker operations over the run service (runs, files) and its engine worker."""

    def __init__(self, runs: RunService, clock: Callable[[], float] = time.time):
        self.runs = runs
        self.clock = clock
        # Flags handed to tinker SDKs (tests flip them to drive both code paths).
        self.compress_fwdbwd = True
        self.use_pyqwest_transport = True
        self.store = runs.store
        self.signer = UrlSigner(Path(runs.data_dir))

    # ----- the tinker SDK's start-up flags -------------------------------------------------
    def client_flags(self) -> dict:
        """`/client/config`: every flag stated, each one this server honours as stated."""
        return {
            "pjwt_auth_enabled": False,  # no JWT exchange: X-API-Key on every call
            "credential_default_source": "api_key",
            "parallel_fwdbwd_chunks": True,  # ordered by seq_id on arrival
            "proto_compress_fwdbwd": self.compress_fwdbwd,  # zstd bodies are decompressed
            "fwdbwd_max_chunk_len": 1024,
            "fwdbwd_max_chunk_bytes_count": 5_000_000,
            "use_pyqwest_transport": self.use_pyqwest_transport,
            "sample_no_retries": False,
            "sample_use_retrieve_futures": False,  # no /retrieve_futures here
            "custom_loss_server_side": False,  # custom losses run client-side
            "sample_join_sampling_session": False,  # no /join_sampling_session here
        }

    def client_dynamic_flags(self) -> dict:
        """`/client/dynamic_config`: `/cancel_future` exists, so explicit cancels are on."""
        return {
            "refresh_interval_sec": 300,
            "sample_cancel_enabled": True,
            "sample_cancel_max_batch_size": 64,
        }

    # ----- models --------------------------------------------------------------------------
    def check_base_model(self, base_model: str) -> None:
        """NotFound (naming the available ones) for a base model that is not registered."""
        self.runs.check_base_model(base_model)

    def supported_models(self) -> list[str]:
        """The base models a caller may name."""
        return self.runs.base_models()

    async def create_model(self, spec: RunSpec, run_id: str | None = None) -> Run:
        """A new run of `spec` (built by the Tinker schema). Models of a tinker session get the
        id `{session_id}:train:{model_seq_id}` (`run_id`)."""
        return await self.runs.create_run(spec, run_id)

    async def check_memory(self, spec: RunSpec) -> None:
        """Refuse at once (4xx) a model that would not fit the memory budget (admission.py)."""
        self.check_base_model(spec.base_model)
        await self.runs.check_memory(spec)

    def model_spec(self, tenant_id: str, model_id: str) -> RunSpec:
        """The RunSpec of this tenant's model (NotFound for another tenant's)."""
        return self.model_row(tenant_id, model_id).spec

    def checkpoint_spec(self, tenant_id: str, path: str) -> RunSpec:
        """The RunSpec of the run a checkpoint this tenant may read belongs to."""
        return self._run_of(self.resolve(tenant_id, path)).spec

    def _run_of(self, checkpoint: Checkpoint) -> Run:
        run = self.store.get_run(checkpoint.run_id)
        if run is None:  # runs are only marked deleted, so a checkpoint's run stays
            raise NotFound(f"the run of checkpoint {checkpoint.name!r} no longer exists")
        return run

    def get_info(self, tenant_id: str, model_id: str) -> ModelInfo:
        """This tenant's model and its spec (tinker's `get_info`)."""
        row = self.model_row(tenant_id, model_id)
        return ModelInfo(row.id, row.spec)

    def weights_info(self, tenant_id: str, path: str) -> RunSpec:
        """What a checkpoint holds: the spec (base model and LoRA layout) of its run."""
        return self.checkpoint_spec(tenant_id, path)

    async def unload_model(self, tenant_id: str, model_id: str) -> None:
        """Free the model's memory in the engine (it reloads on its next use)."""
        await self.runs.unload(tenant_id, model_id)

    # ----- training ------------------------------------------------------------------------
    async def forward_backward(
        self,
        tenant_id: str,
        model_id: str,
        datums: list[Datum],
        loss_fn: str,
        loss_fn_config: dict[str, float],
        forward_only: bool,
    ) -> ForwardBackwardResult:
        """Sum-reduced loss; the gradient adds to the pending one (unless `forward_only`)."""
        row = await asyncio.to_thread(self.model_row, tenant_id, model_id)
        await self.runs.ensure_loaded(row)
        op = ops.ForwardBackward(
            model_id,
            row.base_model,
            datums,
            loss_fn=loss_fn,
            loss_fn_config=loss_fn_config,
            reduction="sum",
            accumulate=True,
            forward_only=forward_only,
        )
        started = time.monotonic()
        result: ForwardBackwardResult = await self.runs.submit(op, model_id, tenant_id)
        if not forward_only:
            self.runs.record_pending_loss(model_id, result, seconds=time.monotonic() - started)
        return result

    async def optim_step(self, tenant_id: str, model_id: str, adam: dict[str, float]) -> StepResult:
        """Apply the pending gradient with every Adam setting of this step (`adam`)."""
        return await self.runs.optim_step(tenant_id, model_id, None, overrides=adam)

    # ----- training runs (REST) ------------------------------------------------------------
    def training_run(self, row: Run) -> TrainingRunInfo:
        """The run and its newest training and sampler checkpoints (expired ones left out)."""
        listed = self.listed(row.id)
        training = [c for c in listed if c.kind == "training"]
        sampler = [c for c in listed if c.kind == "sampler_weights"]
        return TrainingRunInfo(
            row, training[-1] if training else None, sampler[-1] if sampler else None
        )

    def get_training_run(self, tenant_id: str, run_id: str) -> TrainingRunInfo:
        """This tenant's run as a training run (NotFound for another tenant's)."""
        return self.training_run(self.runs.run_row(tenant_id, run_id))

    def list_training_runs(self, tenant_id: str, limit: int, offset: int) -> TrainingRunPage:
        """A page of this tenant's runs, newest first."""
        rows = list(reversed(self.store.list_runs(tenant_id)))
        page = rows[offset : offset + limit]
        return TrainingRunPage([self.training_run(row) for row in page], offset, limit, len(rows))

    # ----- sampling ------------------------------------------------------------------------
    async def sample(
        self,
        tenant_id: str,
        model_path: str | None,
        base_model: str | None,
        prompt_tokens: list[int],
        params: SamplingParams,
        num_samples: int,
        prompt_logprobs: bool,
    ) -> SampleResult:
        """Sample a saved checkpoint (`model_path` wins) or the bare base model.

        Stops as every face does (service/sampling.py).
        """
        if model_path:
            checkpoint = await asyncio.to_thread(self.resolve, tenant_id, model_path)
            folder = await asyncio.to_thread(self.runs.storage.local, checkpoint.path)
            base = (await asyncio.to_thread(self._run_of, checkpoint)).base_model
        elif base_model:
            self.check_base_model(base_model)
            folder, base = "", base_model
        else:
            raise InvalidRequest("send model_path (a sampler checkpoint) or base_model")
        if not prompt_tokens:
            raise InvalidRequest("prompt is empty: send at least one token")
        requests = sample_requests(
            base,
            [prompt_tokens],
            params,
            num_samples=num_samples,
            prompt_logprobs=prompt_logprobs,
            checkpoint=folder,
        )
        sampled: ops.Sampled = await self.runs.submit(ops.Sample(base, requests), "", tenant_id)
        return sampled.results[0]
