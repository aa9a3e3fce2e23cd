"""Runs typed operations (`engine/operations.py`) on an `Engine`, in the thread that owns it.

`execute(engine, op)` runs any operation to its typed result. The scheduler batches
`ForwardBackward`, `Sample` and `OptimStep` operations with others, so for those it calls
`prepare` (the engine request(s) of one operation) and `finish` (the batch's outcome for one
operation → its typed result) around the batched engine call (`optim_step_batch` for steps).
Multi-step operations (an optimizer step and its saves, a checkpoint load and its copies) run
here as one unit. It knows nothing about threads,
HTTP or the store.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import singledispatch
from typing import Any

from frontier_signal.engine.engine import Engine
from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.operations import (
    CheckpointLoaded,
    CreateRun,
    DeleteRun,
    Embed,
    Embedded,
    EstimateRunBytes,
    Export,
    Exported,
    ForwardBackward,
    LoadCheckpoint,
    LoadModel,
    ModelDescription,
    ModelInfo,
    OptimStep,
    OptimStepDone,
    Prepared,
    PrepareSampling,
    RestoreRun,
    RunBytes,
    RunCreated,
    RunDeleted,
    RunRestored,
    Sample,
    Sampled,
    SaveCheckpoint,
    SavedCheckpoint,
    WorkerInfo,
    fill_step,
)
from frontier_signal.engine.types import (
    CheckpointKind,
    ForwardBackwardRequest,
    OptimStepResult,
    SampleRequest,
)
from frontier_signal.engine.validation import stop_token_ids, tokens_to_generate


def execute(engine: Engine, op: Any) -> Any:
    """Run `op` alone on `engine`; its typed result.

    Raises:
        TypeError: `op` is not an operation of `engine/operations.py`.
        EngineError: what the engine raises for the operation's input (a 4xx for the caller).
    """
    if isinstance(op, ForwardBackward):
        return engine.forward_backward_batch([prepare(engine, op)])[0]
    if isinstance(op, Sample):
        return finish(op, engine.sample_batch(prepare(engine, op)))
    return _run(op, engine)


def prepare(engine: Engine, op: Any) -> Any:
    """The engine request(s) of a batched operation: a `ForwardBackwardRequest` for a
    `ForwardBackward`, a list of `SampleRequest` for a `Sample`, the op itself for an
    `OptimStep` (`optim_step_batch` runs it); any other operation runs
    (`execute`) and this is its result."""
    if isinstance(op, ForwardBackward):
        return _forward_backward_request(engine, op)
    if isinstance(op, Sample):
        return _sample_requests(engine, op)
    if isinstance(op, OptimStep):
        return op  # stepped with others' (`optim_step_batch`)
    return execute(engine, op)


def finish(op: Any, outcome: Any) -> Any:
    """A batch's outcome for `op` → its typed result (a sample batch gives a list)."""
    if isinstance(op, Sample) and not isinstance(outcome, Sampled):
        return Sampled(list(outcome))
    return outcome


# ----- batched operations ------------------------------------------------------------------
def _forward_backward_request(engine: Engine, op: ForwardBackward) -> ForwardBackwardRequest:
    datums = list(op.datums)
    if op.examples:
        rendered = engine.render(op.base_model, list(op.examples), op.max_length)
        for index, example in enumerate(rendered):
            if example.truncated:
                raise InvalidInputError(
                    f"batch[{index}] has {example.num_tokens} tokens, over this run's "
                    f"max_seq_length of {op.max_length}; shorten it or create a run with a "
                    "larger max_seq_length"
                )
        datums += [example.datum for example in rendered]
    return ForwardBackwardRequest(
        op.run_id,
        datums,
        op.loss_fn,
        dict(op.loss_fn_config),
        op.reduction,
        op.accumulate,
        op.forward_only,
        op.token_outputs,
    )


def _sample_requests(engine: Engine, op: Sample) -> list[SampleRequest]:
    """The requests with the stop rule (`validation.stop_token_ids`) and, with `fit_context`,
    `max_tokens` fitted to the model's context."""
    base = engine.load_model(op.base_model)
    eos = base.tokenizer.eos_token_id
    requests = []
    for request in op.requests:
        params = replace(request.params, stop_token_ids=stop_token_ids(request.params, eos))
        if op.fit_context:
            wanted = tokens_to_generate(
                base.context_length,
                len(request.prompt_tokens),
                params.max_tokens,
                op.default_max_tokens,
            )
            params = replace(params, max_tokens=wanted)
        requests.append(replace(request, params=params))
    return requests


# ----- operations that run alone -----------------------------------------------------------
@singledispatch
def _run(op: Any, engine: Engine) -> Any:
    raise TypeError(f"{type(op).__name__} is not an engine operation (engine/operations.py)")


def _describe(engine: Engine, name: str) -> ModelDescription:
    base = engine.load_model(name)
    return ModelDescription(
        base.name, base.context_length, base.vocab_size, base.tokenizer.eos_token_id
    )


@_run.register
def _(op: LoadModel, engine: Engine) -> ModelDescription:
    return _describe(engine, op.name)


@_run.register
def _(op: ModelInfo, engine: Engine) -> ModelDescription:
    return _describe(engine, op.name)


@_run.register
def _(op: PrepareSampling, engine: Engine) -> Prepared:
    engine.prepare_sampling(op.model, op.checkpoint)
    return Prepared(op.model, op.checkpoint)


@_run.register
def _(op: EstimateRunBytes, engine: Engine) -> RunBytes:
    return RunBytes(engine.estimate_run_bytes(op.config))


@_run.register
def _(op: CreateRun, engine: Engine) -> RunCreated:
    info = engine.create_run(op.config, op.run_id)
    sampler = None
    if op.sampler_folder:
        try:
            sampler = step_copy(engine, op.run_id, op.sampler_folder, info.step)
        except BaseException:
            engine.delete_run(op.run_id)
            raise
    return RunCreated(op.run_id, info.dtype, info.step, sampler)


@_run.register
def _(op: RestoreRun, engine: Engine) -> RunRestored:
    if op.run_id in engine.list_runs():  # held already (another API process restored it)
        return RunRestored(op.run_id, engine.get_run(op.run_id).step)
    if op.checkpoint:
        optimizer = op.config.optimizer if op.config is not None else None
        info = engine.create_run_from_checkpoint(
            op.checkpoint, op.run_id, op.with_optimizer, optimizer
        )
        return RunRestored(op.run_id, info.step)
    if op.config is None:
        raise InvalidInputError("restoring a run needs its config or a checkpoint")
    info = engine.create_run(op.config, op.run_id)
    return RunRestored(op.run_id, info.step)


@_run.register
def _(op: DeleteRun, engine: Engine) -> RunDeleted:
    engine.delete_run(op.run_id)
    return RunDeleted(op.run_id)


@_run.register
def _(op: OptimStep, engine: Engine) -> OptimStepDone:
    started = time.monotonic()
    result = engine.optim_step(op.run_id, **op.overrides)
    return _saved_step(engine, op, result, time.monotonic() - started)


def optim_step_batch(engine: Engine, steps: list[OptimStep]) -> list[OptimStepDone | Exception]:
    """Many runs' `OptimStep`s (each run once) as one multi-tensor update
    (`Engine.optim_step_batch`), then each one's saves. Per op its result or the exception it
    alone failed with; `seconds` is the shared update's time."""
    started = time.monotonic()
    results = engine.optim_step_batch([(op.run_id, dict(op.overrides)) for op in steps])
    seconds = time.monotonic() - started
    outcomes: list[OptimStepDone | Exception] = []
    for op, result in zip(steps, results, strict=True):
        if isinstance(result, Exception):
            outcomes.append(result)
            continue
        try:
            outcomes.append(_saved_step(engine, op, result, seconds))
        except Exception as exc:  # noqa: BLE001 - this op's failure, handed to its caller
            outcomes.append(exc)
    return outcomes


def _saved_step(
    engine: Engine, op: OptimStep, result: OptimStepResult, seconds: float
) -> OptimStepDone:
    """The step's sampler weights and, when due, its training checkpoint."""
    sampler = training = None
    if op.sampler_folder:
        sampler = step_copy(engine, op.run_id, op.sampler_folder, result.step)
    if op.training_folder and op.training_every > 0 and result.step % op.training_every == 0:
        folder = fill_step(op.training_folder, result.step)
        training = save(engine, op.run_id, folder, "training")
    return OptimStepDone(result, seconds, sampler, training)


@_run.register
def _(op: Embed, engine: Engine) -> Embedded:
    return Embedded(engine.embed(op.model, list(op.texts), op.checkpoint))


@_run.register
def _(op: SaveCheckpoint, engine: Engine) -> SavedCheckpoint:
    return save(engine, op.run_id, op.folder, op.kind)


@_run.register
def _(op: LoadCheckpoint, engine: Engine) -> CheckpointLoaded:
    info = engine.load_checkpoint(op.run_id, op.path, op.with_optimizer)
    sampler = training = None
    if op.sampler_folder:
        sampler = step_copy(engine, op.run_id, op.sampler_folder, info.step)
    if op.training_folder:
        folder = fill_step(op.training_folder, info.step)
        training = save(engine, op.run_id, folder, "training")
    return CheckpointLoaded(op.run_id, info.step, info.config, sampler, training)


@_run.register
def _(op: Export, engine: Engine) -> Exported:
    if op.mode == "merged":
        engine.export_merged(op.run_id, op.folder)
        written: dict[str, int] = {}
    elif op.mode == "gguf":
        written = dict(engine.export_gguf(op.run_id, op.folder, op.gguf_type))
    else:
        raise InvalidInputError(f"export mode must be 'merged' or 'gguf', got {op.mode!r}")
    return Exported(op.run_id, engine.get_run(op.run_id).step, written)


def step_copy(engine: Engine, run_id: str, template: str, step: int) -> SavedCheckpoint:
    """The run's per-step sampler weights (for `inference(step=N)`), in the step's folder."""
    return save(engine, run_id, fill_step(template, step), "sampler", compact=True)


def save(
    engine: Engine, run_id: str, folder: str, kind: CheckpointKind, compact: bool = False
) -> SavedCheckpoint:
    """`engine.save_checkpoint`, timed and sized (for the checkpoint metrics); `compact`: a
    per-step sampler copy (see `save_checkpoint`)."""
    started = time.monotonic()
    info = engine.save_checkpoint(run_id, folder, kind, compact)
    seconds = time.monotonic() - started
    return SavedCheckpoint(
        run_id, str(folder), kind, info.step, seconds, info.size_bytes, info.sha256
    )


def describe(engine: Engine, memory_bytes: int | None = None) -> WorkerInfo:
    """What `engine` holds now (read in the thread that owns it); `memory_bytes`, when known,
    saves counting the runs' tensors again."""
    bases = engine.loaded_bases()
    return WorkerInfo(
        models=list(engine.list_models()),
        loaded_models=list(bases),
        context_lengths={name: base.context_length for name, base in bases.items()},
        runs=engine.list_runs(),
        memory_bytes=engine.runs_memory_bytes() if memory_bytes is None else memory_bytes,
        adapter_keys=engine.adapters.keys(),
        caches=engine.cache_stats(),
    )
