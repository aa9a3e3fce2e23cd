"""The engine's sampling side: sample and embed runs, checkpoints and bare base models.

`EngineSampling` is a part of `Engine` (engine/engine.py), split out because sampling is its
own concept: it resolves what a request samples (a loaded run, a frozen adapter folder through
the LRU, or a base model), validates every request before anything runs, and starts a
`SamplingJob` (backend/sampling.py) the scheduler advances slice by slice. Like the engine, it
is not thread-safe and knows nothing about HTTP or SQL.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from frontier_signal.backend import checkpoints
from frontier_signal.backend.adapter_cache import AdapterCache
from frontier_signal.backend.lora import Adapter
from frontier_signal.backend.sampling import Generation, SampleRow, SamplingJob
from frontier_signal.engine import validation
from frontier_signal.engine.errors import InvalidInputError, ModelNotFoundError
from frontier_signal.engine.structured import check_grammar
from frontier_signal.engine.types import SampleRequest, SampleResult, TokenCallback

if TYPE_CHECKING:
    from frontier_signal.backend.base_model import BaseModel
    from frontier_signal.backend.prefix_cache import PrefixCache
    from frontier_signal.backend.training import RunState


class EngineSampling:
    """Sampling and embeddings. `Engine` holds the state these methods read and the methods
    they call (`load_model`, `prefix_cache`)."""

    _bases: dict[str, BaseModel]
    _runs: dict[str, RunState]
    adapters: AdapterCache

    if TYPE_CHECKING:  # Engine's methods (engine/engine.py)

        def load_model(self, name: str) -> BaseModel: ...
        def prefix_cache(self, base_model: str) -> PrefixCache: ...

    def sample(self, request: SampleRequest) -> SampleResult:
        return self.sample_batch([request])[0]

    def sample_batch(
        self, requests: list[SampleRequest], on_token: TokenCallback | None = None
    ) -> list[SampleResult]:
        """Sample many requests (any runs, checkpoints, base models) in batches per base model.

        `on_token(request_index, sample_index, token_id, logprob)` is called as tokens are made.
        """
        job = self.start_sampling(requests, on_token)
        while not job.advance(1 << 30):
            pass
        return job.results()

    def start_sampling(
        self, requests: list[SampleRequest], on_token: TokenCallback | None = None
    ) -> SamplingJob:
        """Validate every request (one bad request fails the call before anything runs), run
        the prompts, and return the generation to `advance` slice by slice (see `SamplingJob`).
        The adapters it samples stay loaded until the job is released (it releases itself
        when it finishes)."""
        with self.adapters.batch() as keys:
            job = self._start_sampling(requests, on_token)
            job.on_release = self.adapters.hold(keys)
        return job

    def _start_sampling(
        self, requests: list[SampleRequest], on_token: TokenCallback | None
    ) -> SamplingJob:
        prepared = []
        identities: dict[str, str] = {}
        for request in requests:
            base, adapter = self._sampling_target(request)
            key = adapter.key if adapter is not None else ""
            identities[key] = adapter.identity() if adapter is not None else ""
            if not request.prompt_tokens and request.prompt_text:
                encoded = base.tokenizer(request.prompt_text, add_special_tokens=False)
                request = replace(request, prompt_tokens=list(encoded["input_ids"]))
            validation.check_sampling(
                request.params,
                request.num_samples,
                request.prompt_tokens,
                base.vocab_size,
                base.context_length,  # prompt + max_tokens must fit: a 400 saying how
            )
            if request.params.grammar:
                check_grammar(request.params.grammar, base.tokenizer)
            prepared.append((request, base, key))
        rows_by_base: dict[str, list[tuple[int, SampleRow]]] = {}
        for index, (request, base, key) in enumerate(prepared):
            seed = request.params.seed
            parent = torch.Generator().manual_seed(
                seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
            )
            for sample_index in range(request.num_samples):
                generator = torch.Generator().manual_seed(
                    int(torch.randint(0, 2**62, (), generator=parent))
                )
                row = SampleRow(
                    key,
                    list(request.prompt_tokens),
                    request.params,
                    generator,
                    request.prompt_logprobs,
                    (index, sample_index),
                )
                rows_by_base.setdefault(base.name, []).append((index, row))
        generations = []
        for base_name, indexed in rows_by_base.items():
            indexed.sort(key=lambda item: item[1].adapter_key)  # contiguous adapter segments
            rows = [row for _, row in indexed]
            base = self._bases[base_name]
            generation = Generation(base, rows, on_token, self.prefix_cache(base_name), identities)
            generations.append(([i for i, _ in indexed], generation))
        return SamplingJob([request for request, _, _ in prepared], generations)

    @torch.no_grad()
    def embed(self, model: str, texts: list[str], checkpoint: str = "") -> list[list[float]]:
        """Mean-pooled final hidden states (LoRA applied), L2-normalised, one per text.

        `model` is a run id or a base model name; `checkpoint` (a path) wins, as in sampling.
        """
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise InvalidInputError("texts must be a non-empty list of non-empty strings")
        base, adapter = self._sampling_target(SampleRequest(model, checkpoint=checkpoint))
        key = adapter.key if adapter is not None else ""
        encoded = [base.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        for index, ids in enumerate(encoded):
            validation.check_fits_context(f"texts[{index}]", len(ids), base.context_length, 0)
        longest = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(texts), longest), base.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), longest), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        input_ids, mask = input_ids.to(base.device), mask.to(base.device)
        with base.routing.use([(key, 0, len(texts))]):
            hidden = base.hidden_states(input_ids, attention_mask=mask).float()
        weights = mask[..., None].float()
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        finite = torch.isfinite(pooled).all(-1)
        if not bool(finite.all()):
            raise InvalidInputError(
                f"texts[{int((~finite).nonzero()[0])}]: {model}'s weights give non-finite "
                "hidden states (it has diverged: e.g. a huge learning rate or LoRA alpha); "
                "load an earlier checkpoint of it"
            )
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().tolist()

    def prepare_sampling(self, model: str, checkpoint: str = "") -> None:
        """Load what sampling `model` (or `checkpoint`) needs: base weights, adapter."""
        self._sampling_target(SampleRequest(model, checkpoint=checkpoint))

    def _sampling_target(self, request: SampleRequest) -> tuple[BaseModel, Adapter | None]:
        """(base model, adapter or None for the bare base) for a run id, a checkpoint path or a
        base model name."""
        if request.checkpoint:
            return self._sampler_adapter(Path(request.checkpoint), request.model)
        if request.model in self._runs:
            run = self._runs[request.model]
            return run.base, run.adapter
        try:
            return self.load_model(request.model), None
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(
                f"{request.model!r} is neither a loaded run nor a known base model", exc.available
            ) from None

    def _sampler_adapter(self, folder: Path, model: str) -> tuple[BaseModel, Adapter]:
        """A frozen adapter from its folder, through the LRU (`adapter_cache`). A folder with
        no frontier_signal.json (a PEFT folder) is for `model` when that names a base model."""
        weights = folder / checkpoints.ADAPTER_WEIGHTS
        if not weights.is_file():
            checkpoints.read_checkpoint(folder)  # raises the message that says what is missing
        hint = "" if model in self._runs else model

        def load(key: str) -> Adapter:
            adapter_config, meta, tensors = checkpoints.read_checkpoint(folder)
            spec = checkpoints.spec_from_adapter_config(adapter_config)
            fallback = hint or adapter_config.get("base_model_name_or_path") or ""
            base_name = checkpoints.run_config_from_meta(meta, fallback, spec).base_model
            base = self.load_model(base_name)
            adapter = Adapter(key, spec, base.layers, base.device, init=False)
            checkpoints.load_adapter_weights(adapter, tensors)
            adapter.frozen, adapter.base_name = True, base.name
            adapter.attach()
            return adapter

        adapter = self.adapters.get(AdapterCache.key_for(folder, weights), load)
        return self._bases[adapter.base_name], adapter
