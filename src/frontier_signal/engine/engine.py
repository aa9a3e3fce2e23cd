"""The training engine: many LoRA runs on shared base models, driven in-process.

Nothing outside engine/ calls this class: the API faces' services submit typed operations
(engine/operations.py) to an engine worker (engine/worker.py), whose executor calls it in the
one thread that owns it (the scheduler's; the local pipeline's own thread). It validates input,
owns the runs, groups compatible requests into mixed batches per base model, and hands tensors
work to the backend. Its sampling side is engine/sampler.py, its checkpoints
engine/checkpointing.py. It knows nothing about HTTP or SQL, and it is not thread-safe.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from frontier_signal.backend import models
from frontier_signal.backend.adapter_cache import MIB, AdapterCache
from frontier_signal.backend.base_model import BaseModel, pick_device, pick_dtype
from frontier_signal.backend.lora import BYTES_PER_PARAM, adapter_param_count
from frontier_signal.backend.multi_step import run_optim_steps
from frontier_signal.backend.prefix_cache import PrefixCache
from frontier_signal.backend.training import RunState, run_forward_backward, run_optim_step
from frontier_signal.engine import validation
from frontier_signal.engine.checkpointing import EngineCheckpoints
from frontier_signal.engine.errors import EngineError, InvalidInputError, RunNotFoundError
from frontier_signal.engine.rendering import RenderedExample, render_example
from frontier_signal.engine.sampler import EngineSampling
from frontier_signal.engine.types import (
    Datum,
    ForwardBackwardRequest,
    ForwardBackwardResult,
    OptimizerSpec,
    OptimStepResult,
    Reduction,
    RunConfig,
    RunInfo,
    normalize_target_modules,
)

logger = logging.getLogger(__name__)


def _return_freed_memory() -> None:
    """Ask glibc to hand freed heap pages back to the OS (else RSS never shrinks)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _available_memory(device: torch.device) -> int:
    """Bytes this process could still allocate on `device` (free GPU memory; available RAM)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


class Engine(EngineSampling, EngineCheckpoints):
    """In-process multi-run LoRA engine (its sampling side in engine/sampler.py, its
    checkpoints in engine/checkpointing.py).

    Args:
        device: `auto` (CUDA when present), `cpu`, `cuda`, `cuda:1`, ...
        dtype: compute dtype of the base weights: `auto` (bf16 where fast), `bfloat16`,
            `float32`. LoRA master weights and optimizer state are always fp32.
        logprob_chunk_tokens: tokens per chunk when computing log-probs over the vocabulary.
        decode_int8: sample with int8 weight-only copies of the base weights (CPU only): about
            twice the decode speed at batch 1 for ~half the model's size in extra memory, at the
            cost of outputs that differ slightly from the exact weights. Off by default: the
            sampler's log-probs then match training's, which RL losses rely on.
        decode_4bit: sample a model that shipped as a Q4_1 GGUF (the bundled SmolLM2) with its
            own 4-bit codes through a 4-bit kernel (CPU, bf16): the file's values at a quarter
            of the bf16 bytes, about twice the batch-1 decode speed, as close to the file's
            values as bf16 decoding is (docs/engine.md, "Decode weights"). Other models, fp32
            and CUDA decode their exact weights whatever this says.
        activation_budget_mib: a training batch whose activations (estimated) exceed this uses
            gradient checkpointing even when none of its runs asked for it, so one large
            batch cannot exhaust the memory. None: a quarter of the memory available at start
            (of the GPU's free memory on CUDA).
        pack_sequences: put consecutive short sequences of one request in one row (block-
            diagonal attention, position ids restarting per sequence) when that saves rows
            (backend/packing.py).
    """

    def __init__(
        self,
        device: str = "auto",
        dtype: str = "auto",
        logprob_chunk_tokens: int = 1024,
        decode_int8: bool = False,
        decode_4bit: bool = True,
        activation_budget_mib: int | None = None,
        pack_sequences: bool = True,
    ):
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.activation_budget_bytes = (
            activation_budget_mib * 2**20
            if activation_budget_mib is not None
            else _available_memory(self.device) // 4
        )
        self.logprob_chunk_tokens = logprob_chunk_tokens
        self.pack_sequences = pack_sequences
        self.decode_int8 = decode_int8
        self.decode_4bit = decode_4bit
        self._bases: dict[str, BaseModel] = {}
        self._runs: dict[str, RunState] = {}
        # Frozen adapters sampled by folder (kept steps, checkpoints, PEFT folders), LRU.
        self.adapters = AdapterCache()
        self.prefix_cache_bytes = 256 * MIB
        self._prefix: dict[str, PrefixCache] = {}  # by base model

    # ----- base models -------------------------------------------------------------------
    def list_models(self) -> list[str]:
        """Names of every base model this machine can load."""
        return list(models.registered_models())

    def load_model(self, name: str) -> BaseModel:
        """Load a base model once; later calls, under any spelling of it, return the same
        object (`models.canonical_name`: one copy per model, not one per path spelling)."""
        name = models.canonical_name(name)
        if name not in self._bases:
            self._bases[name] = BaseModel.load(name, self.device, self.dtype)
            self._bases[name].decode_int8 = self.decode_int8
            self._bases[name].decode_4bit = self.decode_4bit
        return self._bases[name]

    def loaded_models(self) -> list[str]:
        return list(self._bases)

    def loaded_bases(self) -> dict[str, BaseModel]:
        return dict(self._bases)

    def configure_caches(
        self, adapter_mib: float, adapter_count: int, prefix_mib: float | None = None
    ) -> None:
        """Budgets: frozen sampling adapters (MiB and count, LRU) and the prefix KV cache
        (MiB per base model; 0 turns it off)."""
        self.adapters.configure(adapter_count, int(adapter_mib * MIB))
        if prefix_mib is not None:
            self.prefix_cache_bytes = int(prefix_mib * MIB)
            for cache in self._prefix.values():
                cache.configure(self.prefix_cache_bytes)

    def prefix_cache(self, base_model: str) -> PrefixCache:
        if base_model not in self._prefix:
            self._prefix[base_model] = PrefixCache(self.prefix_cache_bytes)
        return self._prefix[base_model]

    def cache_stats(self) -> dict:
        return {
            "adapters": self.adapters.describe(),
            "prefix": {name: cache.describe() for name, cache in list(self._prefix.items())},
        }

    def tokenizer(self, name: str):
        return self.load_model(name).tokenizer

    # ----- runs --------------------------------------------------------------------------
    def create_run(self, config: RunConfig, run_id: str | None = None) -> RunInfo:
        """Create a run (a fresh adapter + optimizer) on a shared base model.

        Raises:
            InvalidInputError: a bad hyperparameter (the message says which).
            ModelNotFoundError: an unknown base model (lists the available ones).
        """
        validation.check_run_config(config)
        lora = replace(
            config.lora, target_modules=normalize_target_modules(config.lora.target_modules)
        )
        config = replace(config, lora=lora)
        run_id = run_id or f"run_{uuid.uuid4().hex[:12]}"
        if run_id in self._runs:
            raise InvalidInputError(f"run {run_id!r} already exists")
        base = self.load_model(config.base_model)
        if config.max_seq_length > base.context_length:
            raise InvalidInputError(
                f"max_seq_length {config.max_seq_length} is over the context of "
                f"{config.base_model!r} ({base.context_length} tokens); use at most that"
            )
        self._runs[run_id] = RunState.create(run_id, config, base)
        return self.get_run(run_id)

    def estimate_run_bytes(self, config: RunConfig) -> int:
        """Memory a run of `config` holds once it has trained a step (fp32 adapter, gradient
        and optimizer state), from its base model's layer shapes; allocates no adapter.

        Raises:
            InvalidInputError, ModelNotFoundError: as `create_run`.
        """
        validation.check_run_config(config)
        targets = normalize_target_modules(config.lora.target_modules)
        base = self.load_model(config.base_model)
        params = adapter_param_count(config.lora.rank, targets, base.layers)
        return params * BYTES_PER_PARAM.get(config.optimizer.kind, BYTES_PER_PARAM["adamw"])

    def _run(self, run_id: str) -> RunState:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(f"no run {run_id!r} is loaded") from None

    def get_run(self, run_id: str) -> RunInfo:
        run = self._run(run_id)
        return RunInfo(
            run_id,
            run.config,
            run.step,
            str(run.base.dtype).removeprefix("torch."),
            run.adapter.num_params(),
            run.memory_bytes(),
            run.has_pending_gradient(),
        )

    def list_runs(self) -> list[str]:
        return list(self._runs)

    def runs_memory_bytes(self) -> int:
        """Adapter, gradient and optimizer bytes every run holds."""
        return sum(run.memory_bytes() for run in self._runs.values())

    def delete_run(self, run_id: str) -> None:
        """Drop a run and free its adapter, gradient and optimizer memory."""
        self._run(run_id).release()
        del self._runs[run_id]
        _return_freed_memory()

    # ----- training ----------------------------------------------------------------------
    def render(
        self, base_model: str, examples: list[dict], max_length: int
    ) -> list[RenderedExample]:
        """Turn `{"text"}` / `{"messages"}` examples into datums with the model's chat template."""
        if not examples:
            raise InvalidInputError("empty batch: send at least one example")
        tokenizer = self.tokenizer(base_model)
        return [render_example(tokenizer, ex, max_length, i) for i, ex in enumerate(examples)]

    def forward_backward(
        self,
        run_id: str,
        datums: list[Datum],
        loss_fn: str = "cross_entropy",
        loss_fn_config: dict[str, float] | None = None,
        reduction: Reduction = "sum",
        accumulate: bool = True,
    ) -> ForwardBackwardResult:
        """Forward + backward of one run; the gradient is added to the run's pending gradient."""
        request = ForwardBackwardRequest(
            run_id, datums, loss_fn, dict(loss_fn_config or {}), reduction, accumulate
        )
        return self.forward_backward_batch([request])[0]

    def forward(
        self,
        run_id: str,
        datums: list[Datum],
        loss_fn: str = "cross_entropy",
        loss_fn_config: dict[str, float] | None = None,
    ) -> ForwardBackwardResult:
        """The same outputs as `forward_backward`, without gradients."""
        request = ForwardBackwardRequest(
            run_id, datums, loss_fn, dict(loss_fn_config or {}), forward_only=True
        )
        return self.forward_backward_batch([request])[0]

    def forward_backward_batch(
        self, requests: list[ForwardBackwardRequest]
    ) -> list[ForwardBackwardResult]:
        """Run many requests (any runs) as mixed batches: one per base model and mode.

        Every request is validated first; one bad request fails the call before any run changes.
        """
        for request in requests:
            run = self._run(request.run_id)
            validation.check_forward_backward(
                request, run.base.vocab_size, run.config.max_seq_length
            )
        results: dict[int, ForwardBackwardResult] = {}
        groups: dict[tuple[str, bool], list[int]] = {}
        for index, request in enumerate(requests):
            key = (self._runs[request.run_id].base.name, request.forward_only)
            groups.setdefault(key, []).append(index)
        for (base_name, _), indices in groups.items():
            batch = [requests[i] for i in indices]
            outputs = run_forward_backward(
                self._bases[base_name],
                self._runs,
                batch,
                self.logprob_chunk_tokens,
                self.activation_budget_bytes,
                self.pack_sequences,
            )
            results.update(zip(indices, outputs, strict=True))
        return [results[i] for i in range(len(requests))]

    def optim_step(self, run_id: str, **overrides: float | None) -> OptimStepResult:
        """Apply the pending gradient; `overrides` (learning_rate, beta1, beta2, eps,
        weight_decay, grad_clip_norm) apply to this step only; None keeps the run's setting.

        Raises:
            InvalidInputError: no pending gradient, a bad override, or a non-finite gradient
                (which is dropped; the weights stay unchanged).
        """
        run, spec = self._optim_spec(run_id, overrides)
        try:
            return run_optim_step(run, spec)
        except FloatingPointError as exc:
            raise InvalidInputError(str(exc)) from None

    def optim_step_batch(
        self, steps: list[tuple[str, Mapping[str, float | None]]]
    ) -> list[OptimStepResult | EngineError]:
        """`optim_step` of many runs (`(run_id, overrides)`, each run at most once) in one set of
        multi-tensor updates (backend/multi_step.py): the same weights as one after another.
        Per step its result, or the `EngineError` that `optim_step` would have raised for it
        (a bad step fails alone; the others still apply)."""
        if len({run_id for run_id, _ in steps}) != len(steps):
            raise InvalidInputError("optim_step_batch takes each run at most once")
        outcomes: dict[int, OptimStepResult | EngineError] = {}
        ready: list[tuple[int, tuple[RunState, OptimizerSpec]]] = []
        for index, (run_id, overrides) in enumerate(steps):
            try:
                ready.append((index, self._optim_spec(run_id, overrides)))
            except EngineError as exc:
                outcomes[index] = exc
        results = run_optim_steps([item for _, item in ready])
        for (index, _), result in zip(ready, results, strict=True):
            if isinstance(result, FloatingPointError):
                outcomes[index] = InvalidInputError(str(result))
            else:
                outcomes[index] = result
        return [outcomes[i] for i in range(len(steps))]

    def _optim_spec(
        self, run_id: str, overrides: Mapping[str, float | None]
    ) -> tuple[RunState, OptimizerSpec]:
        """The run and its settings for this step, checked; raises what `optim_step` raises
        before touching anything."""
        run = self._run(run_id)
        unknown = set(overrides) - {
            "learning_rate",
            "beta1",
            "beta2",
            "eps",
            "weight_decay",
            "grad_clip_norm",
        }
        if unknown:
            raise InvalidInputError(f"unknown optimizer settings {sorted(unknown)}")
        # Any: mypy checks a `**dict` against every field, `kind` (a Literal) included.
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        spec = replace(run.config.optimizer, **given)
        validation.check_optimizer(spec)
        if not run.has_pending_gradient():
            raise InvalidInputError("nothing to apply: call forward_backward first")
        return run, spec
