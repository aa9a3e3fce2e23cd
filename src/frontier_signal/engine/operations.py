"""Typed engine operations: every request a service makes of the engine, and its result.

An operation is a frozen dataclass of plain data (strings, numbers, lists, the engine's own
dataclasses from `engine/types.py`); so is its result. Both pickle, so a worker in another
process (a Ray actor) can take the same operations as the in-process one. Multi-step work is
one operation (an optimizer step and the checkpoints it writes; a create and its step-0
weights), never a closure. `engine/executor.py` runs them; `engine/worker.py` is the boundary
services submit them through. Stream callbacks are not part of an operation: `submit` takes
them beside it.

Folders are plain strings the service chose (it owns the data layout); a folder holding
`{step}` is filled with the step the operation reached. This module holds no logic beyond
that, and knows nothing about HTTP, SQL or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from frontier_signal.engine.types import (
    CheckpointKind,
    Datum,
    OptimStepResult,
    Reduction,
    RunConfig,
    SampleRequest,
    SampleResult,
)

STEP_PLACEHOLDER = "{step}"

ExportMode = Literal["merged", "gguf"]


def fill_step(folder: str, step: int) -> str:
    """`folder` with its `{step}` placeholder (if any) replaced by the zero-padded step."""
    return folder.replace(STEP_PLACEHOLDER, f"{step:06d}")


# ----- results shared by several operations ------------------------------------------------
@dataclass(frozen=True)
class SavedCheckpoint:
    """A checkpoint folder the engine wrote: what, where, at which step, its cost."""

    run_id: str
    folder: str
    kind: CheckpointKind
    step: int
    seconds: float
    size_bytes: int
    sha256: str = ""  # the folder's digest, computed while it was fsynced ("" if not)


# ----- models ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadModel:
    """Load a base model's weights (once; later loads are free)."""

    name: str


@dataclass(frozen=True)
class ModelInfo:
    """What a base model is (loads it when needed)."""

    name: str


@dataclass(frozen=True)
class ModelDescription:
    """The result of `LoadModel` and `ModelInfo`."""

    name: str  # the canonical name the engine keeps it under
    context_length: int
    vocab_size: int
    eos_token_id: int | None


@dataclass(frozen=True)
class PrepareSampling:
    """Load what sampling `model` (a run id or base model) or `checkpoint` (a folder) needs."""

    model: str
    checkpoint: str = ""


@dataclass(frozen=True)
class Prepared:
    model: str
    checkpoint: str


# ----- runs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EstimateRunBytes:
    """Memory a run of `config` holds once trained a step (loads the base model if needed)."""

    config: RunConfig


@dataclass(frozen=True)
class RunBytes:
    bytes: int


@dataclass(frozen=True)
class CreateRun:
    """A fresh run; with `sampler_folder`, its step-0 sampler weights are written there too
    (a failed write removes the run again)."""

    run_id: str
    config: RunConfig
    sampler_folder: str = ""


@dataclass(frozen=True)
class RunCreated:
    run_id: str
    dtype: str  # the base weights' compute dtype ("bfloat16", "float32")
    step: int
    sampler: SavedCheckpoint | None


@dataclass(frozen=True)
class RestoreRun:
    """Load a run after a restart: from `checkpoint` (a checkpoint folder: weights, step and,
    with `with_optimizer`, optimizer state; the optimizer hyperparameters of `config` win over
    the saved ones), else fresh from `config`. With no `config`, the checkpoint's own."""

    run_id: str
    config: RunConfig | None
    checkpoint: str = ""
    with_optimizer: bool = True


@dataclass(frozen=True)
class RunRestored:
    run_id: str
    step: int


@dataclass(frozen=True)
class DeleteRun:
    """Drop a run and free its memory."""

    run_id: str


@dataclass(frozen=True)
class RunDeleted:
    run_id: str


# ----- training ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ForwardBackward:
    """Forward + backward of one run. Either `datums` (tokens), or `examples` (`{"text"}` /
    `{"messages"}`) rendered with the model's chat template, where one longer than
    `max_length` tokens is refused. The result is the engine's `ForwardBackwardResult`."""

    run_id: str
    base_model: str
    datums: list[Datum] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    max_length: int = 0
    loss_fn: str = "cross_entropy"
    loss_fn_config: dict[str, float] = field(default_factory=dict)
    reduction: Reduction = "sum"
    accumulate: bool = True
    forward_only: bool = False
    token_outputs: bool = True  # False: totals only (types.ForwardBackwardRequest)


@dataclass(frozen=True)
class Forward(ForwardBackward):
    """The outputs of `ForwardBackward` without gradients (batched with it)."""

    forward_only: bool = True


@dataclass(frozen=True)
class OptimStep:
    """Apply the pending gradient (`overrides`: learning_rate, beta1, beta2, eps,
    weight_decay, grad_clip_norm for this step only; None keeps the run's own), then write the
    step's sampler weights to `sampler_folder` and, when `training_every` divides the new step,
    a training checkpoint to `training_folder` (both may hold `{step}`)."""

    run_id: str
    overrides: dict[str, float | None] = field(default_factory=dict)
    sampler_folder: str = ""
    training_folder: str = ""
    training_every: int = 0


@dataclass(frozen=True)
class OptimStepDone:
    result: OptimStepResult
    seconds: float  # the optimizer step alone, without the saves
    sampler: SavedCheckpoint | None
    training: SavedCheckpoint | None


# ----- sampling ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """Sample requests batched with whatever else decodes on `base_model`.

    Generation stops by `engine/validation.stop_token_ids` (the request's stops and, unless
    its params set `ignore_eos`, the model's end-of-sequence token); `fit_context` sets each
    request's `max_tokens` of 0 to as many as fit (up to `default_max_tokens`) and refuses a
    prompt plus `max_tokens` over the context."""

    base_model: str
    requests: list[SampleRequest]
    fit_context: bool = False
    default_max_tokens: int = 4096


@dataclass(frozen=True)
class Sampled:
    results: list[SampleResult]  # one per request, in order


@dataclass(frozen=True)
class Embed:
    """Mean-pooled, L2-normalised final hidden states of `model` (a run id or base model;
    `checkpoint` wins), one per text."""

    model: str
    texts: list[str]
    checkpoint: str = ""


@dataclass(frozen=True)
class Embedded:
    vectors: list[list[float]]


# ----- checkpoints -------------------------------------------------------------------------
@dataclass(frozen=True)
class SaveCheckpoint:
    """Write a `training` (resumes exactly) or `sampler` (adapter only) checkpoint."""

    run_id: str
    folder: str
    kind: CheckpointKind = "training"


@dataclass(frozen=True)
class LoadCheckpoint:
    """Load a checkpoint folder into a run (layout and step from the checkpoint), then write
    the loaded weights as the run's sampler weights (`sampler_folder`, may hold `{step}`) and
    its own training checkpoint (`training_folder`), when given."""

    run_id: str
    path: str
    with_optimizer: bool = True
    sampler_folder: str = ""
    training_folder: str = ""


@dataclass(frozen=True)
class CheckpointLoaded:
    run_id: str
    step: int
    config: RunConfig  # the run's config with the checkpoint's LoRA layout
    sampler: SavedCheckpoint | None
    training: SavedCheckpoint | None


@dataclass(frozen=True)
class Export:
    """Write a run's weights for other tools: `merged` (a transformers folder with the LoRA
    folded in) or `gguf` (llama.cpp / Ollama files of `gguf_type`)."""

    run_id: str
    folder: str
    mode: ExportMode = "merged"
    gguf_type: str = "f16"


@dataclass(frozen=True)
class Exported:
    run_id: str
    step: int
    files: dict[str, int]  # file name → bytes (GGUF); empty for merged (the folder has them)


Operation = (
    LoadModel
    | ModelInfo
    | PrepareSampling
    | EstimateRunBytes
    | CreateRun
    | RestoreRun
    | DeleteRun
    | ForwardBackward
    | OptimStep
    | Sample
    | Embed
    | SaveCheckpoint
    | LoadCheckpoint
    | Export
)


def ordering_kind(op: object) -> str:
    """How the scheduler batches `op`: `forward_backward` (mixed batches of runs), `sample`
    (decode batches), `optim_step` (steps of several runs in one multi-tensor update), or
    `call` (alone)."""
    if isinstance(op, ForwardBackward):
        return "forward_backward"
    if isinstance(op, Sample):
        return "sample"
    if isinstance(op, OptimStep):
        return "optim_step"
    return "call"


def batch_model(op: object) -> str:
    """The base model a batched operation runs on ("" for a call)."""
    if isinstance(op, ForwardBackward | Sample):
        return op.base_model
    return ""


def held_run(op: object, key: str) -> str:
    """The run `op` needs its worker to hold ("" for none): a run operation's run, or the run
    a `Sample` / `Embed` / `PrepareSampling` reads (its `key`, when it names that run and no
    checkpoint). `CreateRun` and `RestoreRun` make a run held instead."""
    if isinstance(op, CreateRun | RestoreRun):
        return ""
    run_id = getattr(op, "run_id", "")
    if run_id:
        return run_id
    if not key:
        return ""
    if isinstance(op, Sample):
        reads = any(r.model == key and not r.checkpoint for r in op.requests)
        return key if reads else ""
    if isinstance(op, Embed | PrepareSampling):
        return key if op.model == key and not op.checkpoint else ""
    return ""


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker's engine holds, as its engine thread last published it (after each
    batch): plain reads for the event loop, which never touches the engine itself."""

    models: list[str] = field(default_factory=list)  # every base model it can load
    loaded_models: list[str] = field(default_factory=list)
    context_lengths: dict[str, int] = field(default_factory=dict)  # of the loaded models
    runs: list[str] = field(default_factory=list)  # runs held in memory
    # What those runs hold (adapters, gradients, optimizer state), as of the last call (create,
    # optimizer step, load, delete): a forward_backward's new gradient shows after the step.
    memory_bytes: int = 0
    adapter_keys: list[str] = field(default_factory=list)  # frozen adapters in the sampling LRU
    caches: dict = field(default_factory=dict)  # adapter LRU and prefix caches (sizes, hits)
