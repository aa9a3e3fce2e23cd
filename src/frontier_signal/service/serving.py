"""The OpenAI-compatible face's rules (docs/openai-api.md): which weights a `model` names, chat
prompts rendered exactly as training renders them, generation through the scheduler, and warmup.

A `model` is one of:
- a base model name (`HuggingFaceTB/SmolLM2-135M-Instruct`): the bare base model;
- a run id (`run_...`): that run's current weights, in order after its queued training steps;
- `run_...@STEP`: the sampler weights a run kept at that step (see `GET /v1/runs/{id}/steps`);
- `run_...:CHECKPOINT`: a saved checkpoint by id or name (Signal `save_state` ids, Tinker names);
- a Tinker path (`tinker://...`, `hpcai://...`);
- the name of an adapter the operator registered (service/adapter_registry.py), for every key.

Nothing needs loading first: a run loads on first use, and every frozen adapter (step,
checkpoint, registered folder) goes through the engine's LRU (backend/adapter_cache.py). A tenant
only ever resolves its own runs; another tenant's run is "not found", like a typo.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from pathlib import Path

from frontier_signal.backend.adapter_cache import AdapterCache
from frontier_signal.backend.checkpoints import ADAPTER_WEIGHTS
from frontier_signal.engine import operations as ops
from frontier_signal.engine.tools import template_messages
from frontier_signal.engine.types import SampleResult, SamplingParams, TokenCallback
from frontier_signal.engine.validation import tokens_to_generate
from frontier_signal.service.adapter_registry import adapter_base_model, registered_adapters
from frontier_signal.service.errors import InvalidRequest, NotFound
from frontier_signal.service.runs import RunService
from frontier_signal.service.sampling import DEFAULT_MAX_TOKENS, sample_requests
from frontier_signal.service.tables import Run
from frontier_signal.service.tinker import TinkerService


@dataclass(frozen=True)
class ServableModel:
    """A name this tenant can serve (`GET /v1/models`)."""

    id: str
    created: float
    owned_by: str
    parent: str | None  # the base model of a run, checkpoint or adapter


@dataclass
class WarmupState:
    """Where loading a `model` stands: "loading", "ready", "error" or "not_loaded"."""

    model: str
    status: str
    detail: str


@dataclass(frozen=True)
class Target:
    """The weights a `model` name resolved to."""

    name: str  # as the caller wrote it; echoed back in responses
    base_model: str
    engine_model: str  # `SampleRequest.model`: a run id or the base model name
    checkpoint: str = ""  # a checkpoint folder (wins over engine_model), or ""
    run: Run | None = None
    tenant_id: str = ""  # who asked (the scheduler's fairness owner)

    @property
    def key(self) -> str:
        """Scheduler key: a run's own queue (reads see its finished steps), else shared."""
        return self.run.id if self.run is not None and not self.checkpoint else ""


class ServingService:
    """Chat and completions over base models, runs and checkpoints; warmup state."""

    def __init__(self, runs: RunService, tinker: TinkerService):
        self.runs = runs
        self.tinker = tinker
        self.worker = runs.worker
        self._warmups: dict[tuple[str, str], WarmupState] = {}
        self.started_at = time.time()

    # ----- models ---------------------------------------------------------------------------
    def base_models(self) -> list[str]:
        return self.runs.base_models()

    def resolve(self, tenant_id: str, model: str) -> Target:
        """The weights `model` names for this tenant.

        Raises:
            NotFound: no base model, run or checkpoint of this tenant has that name.
            InvalidRequest: the name points at something that cannot be sampled.
        """
        return replace(self._resolve(tenant_id, model), tenant_id=tenant_id)

    def _resolve(self, tenant_id: str, model: str) -> Target:
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest("model is required: a base model name or one of your run ids")
        if model in self.base_models():
            return Target(model, model, model)
        registered = self.registered_adapters().get(model)
        if registered is not None:
            return self._registered_target(model, registered)
        if model.startswith(("tinker://", "hpcai://")):
            checkpoint = self.tinker.resolve(tenant_id, model)
            return self._checkpoint_target(model, checkpoint.run_id, checkpoint)
        run_id, at, step = model.partition("@")
        if at:
            row = self._run(tenant_id, run_id, model)
            if not step.isdigit():
                raise InvalidRequest(f"model {model!r}: the step after '@' must be an integer")
            folder = self.runs.sampler_path(row.id, int(step))
            return Target(model, row.base_model, row.id, folder, row)
        run_id, colon, name = model.partition(":")
        if colon:
            self._run(tenant_id, run_id, model)
            checkpoint = self.tinker.find_checkpoint(tenant_id, run_id, name)
            return self._checkpoint_target(model, run_id, checkpoint)
        row = self._run(tenant_id, model, model)
        return Target(model, row.base_model, row.id, "", row)

    def registered_adapters(self) -> dict:
        try:
            return registered_adapters(self.runs.settings.adapters)
        except ValueError as exc:
            raise InvalidRequest(f"the server's adapter registry is broken: {exc}") from None

    def _registered_target(self, model: str, source) -> Target:
        base = adapter_base_model(source)
        if base not in self.base_models():
            raise InvalidRequest(
                f"adapter {model!r} ({source.path}) is for base model {base or '(unknown)'!r}, "
                f"which this server does not have ({', '.join(self.base_models())}); set its "
                '"base_model" in adapters.json'
            )
        if not (source.path / ADAPTER_WEIGHTS).is_file():
            raise NotFound(f"adapter {model!r}: no {ADAPTER_WEIGHTS} in {source.path}")
        return Target(model, base, base, str(source.path))

    def servable(self, tenant_id: str) -> list[ServableModel]:
        """Every name this tenant can serve, in a stable order: base models, registered
        adapters, then each run followed by its named checkpoints (`run:name`) and kept steps
        (`run@step`)."""
        started = self.started_at
        items = [
            ServableModel(name, started, "frontier-signal", None) for name in self.base_models()
        ]
        for name, source in sorted(self.registered_adapters().items()):
            parent = adapter_base_model(source) or None
            items.append(ServableModel(name, started, "frontier-signal", parent))
        for row in self.runs.store.list_runs(tenant_id):
            items.append(ServableModel(row.id, row.created_at, tenant_id, row.base_model))
            names: dict[str, float] = {}
            steps: dict[int, float] = {}
            for checkpoint in self.runs.store.list_checkpoints(row.id):
                if checkpoint.kind == "sampler":
                    steps.setdefault(checkpoint.step, checkpoint.created_at)
                elif checkpoint.kind in ("training", "sampler_weights") and checkpoint.name:
                    names.setdefault(checkpoint.name, checkpoint.created_at)
            for name, created in sorted(names.items()):
                items.append(ServableModel(f"{row.id}:{name}", created, tenant_id, row.base_model))
            for step, created in sorted(steps.items()):
                items.append(ServableModel(f"{row.id}@{step}", created, tenant_id, row.base_model))
        return items

    def model(self, tenant_id: str, model: str) -> ServableModel:
        """The listing entry of one name (404 if this tenant cannot serve it)."""
        target = self.resolve(tenant_id, model)
        for item in self.servable(tenant_id):
            if item.id == model:
                return item
        owner = tenant_id if target.run is not None else "frontier-signal"
        created = target.run.created_at if target.run is not None else self.started_at
        return ServableModel(model, created, owner, target.base_model)

    def models_page(
        self, tenant_id: str, after: str | None, limit: int | None
    ) -> tuple[list[ServableModel], bool]:
        """(items, has_more): all of `servable` when neither is given (what clients that do not
        page expect), else up to `limit` (default 100) after the id `after`.

        Raises:
            InvalidRequest: `after` is not an id of the list.
        """
        items = self.servable(tenant_id)
        start = 0
        if after is not None:
            ids = [item.id for item in items]
            if after not in ids:
                raise InvalidRequest(
                    f"after={after!r} is not a model id of this list; pass the last_id of the "
                    "previous page"
                )
            start = ids.index(after) + 1
        end = len(items) if after is None and limit is None else start + (limit or 100)
        return items[start:end], end < len(items)

    def _run(self, tenant_id: str, run_id: str, model: str) -> Run:
        try:
            return self.runs.run_row(tenant_id, run_id)
        except NotFound:
            raise NotFound(
                f"model {model!r} not found: it is neither a base model of this server "
                f"({', '.join(self.base_models())}) nor one of your runs "
                "(run id, run@step or run:checkpoint)"
            ) from None

    def _checkpoint_target(self, model: str, run_id: str, checkpoint) -> Target:
        if checkpoint.kind in ("merged", "gguf"):
            raise InvalidRequest(
                f"model {model!r} is a {checkpoint.kind} export, which is served by loading it as "
                "a base model; name the run or one of its adapter checkpoints instead"
            )
        row = self.runs.store.existing_run(run_id)
        folder = self.runs.storage.local(checkpoint.path)  # shared storage: downloaded once
        return Target(model, row.base_model, row.id, folder, row)

    # ----- generation -----------------------------------------------------------------------
    def tokenizer(self, target: Target):
        return self.runs.tokenizer(target.base_model)

    def chat_prompt(self, target: Target, messages: list, functions: list[dict] | None) -> str:
        """The prompt text for the assistant's next turn: the chat template over the messages
        (tools in the format training uses, engine/tools.py)."""
        plain = template_messages(messages, functions)
        return self.tokenizer(target).apply_chat_template(
            plain, tokenize=False, add_generation_prompt=True
        )

    def encode(self, target: Target, text: str) -> list[int]:
        return list(self.tokenizer(target)(text, add_special_tokens=False)["input_ids"])

    def check_room(self, target: Target, prompts: list[list[int]], max_tokens: int) -> None:
        """Refuse up front (400, before a stream starts) what cannot fit the model's context;
        known once the base model is in memory, and checked again when generating."""
        context = self.worker.info().context_lengths.get(target.base_model)
        if context is not None:
            for tokens in prompts:
                tokens_to_generate(context, len(tokens), max_tokens, DEFAULT_MAX_TOKENS)

    async def generate(
        self,
        target: Target,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int,
        prompt_logprobs: bool = False,
        on_token: TokenCallback | None = None,
    ) -> list[SampleResult]:
        """`n` samples of every prompt, batched with whatever else the engine is decoding;
        stopping as every face does (service/sampling.py)."""
        if target.run is not None and not target.checkpoint:
            await self.runs.ensure_loaded(target.run)
        requests = sample_requests(
            target.engine_model,
            prompts,
            params,
            num_samples=n,
            prompt_logprobs=prompt_logprobs,
            checkpoint=target.checkpoint,
        )
        op = ops.Sample(
            target.base_model,
            requests,
            fit_context=True,
            default_max_tokens=DEFAULT_MAX_TOKENS,
        )
        sampled = await self.runs.submit(
            op, key=target.key, owner=target.tenant_id, on_token=on_token
        )
        return sampled.results

    # ----- warmup ---------------------------------------------------------------------------
    def warmup_status(self, tenant_id: str, model: str) -> WarmupState:
        """Where warming `model` stands. A model never warmed is resolved (404 if unknown) and
        reported ready when it is already in memory."""
        known = self._warmups.get((tenant_id, model))
        if known is not None:
            return known
        target = self.resolve(tenant_id, model)
        ready = self._in_memory(target)
        detail = "in memory" if ready else "not loaded: POST /v1/warmup loads it"
        return WarmupState(model, "ready" if ready else "not_loaded", detail)

    def _in_memory(self, target: Target) -> bool:
        info = self.worker.info()
        if target.base_model not in info.loaded_models:
            return False
        if target.run is not None and not target.checkpoint:
            return target.run.id in info.runs
        if not target.checkpoint:
            return True
        weights = Path(target.checkpoint) / ADAPTER_WEIGHTS
        return weights.is_file() and AdapterCache.key_for(Path(target.checkpoint), weights) in (
            info.adapter_keys
        )

    async def warmup(self, tenant_id: str, model: str) -> WarmupState:
        """Start loading `model` (base weights, a run's adapter or a checkpoint) in the
        background; answers at once with its status."""
        target = await asyncio.to_thread(self.resolve, tenant_id, model)
        key = (tenant_id, model)
        current = self._warmups.get(key)
        # Loading, or loaded and still in memory (an adapter may have left the LRU since).
        if current is not None and (
            current.status == "loading" or (current.status == "ready" and self._in_memory(target))
        ):
            return current
        status = WarmupState(model, "loading", "loading")
        self._warmups[key] = status
        asyncio.get_running_loop().create_task(self._load(target, status))
        return status

    async def _load(self, target: Target, status: WarmupState) -> None:
        started = time.perf_counter()
        try:
            if target.run is not None and not target.checkpoint:
                await self.runs.ensure_loaded(target.run)
            else:
                op = ops.PrepareSampling(target.engine_model, target.checkpoint)
                await self.runs.submit(op, key=target.key)
        except Exception as exc:  # noqa: BLE001 - reported through the status
            status.status, status.detail = "error", str(exc) or type(exc).__name__
        else:
            seconds = time.perf_counter() - started
            status.status, status.detail = "ready", f"loaded in {seconds:.2f} s"
