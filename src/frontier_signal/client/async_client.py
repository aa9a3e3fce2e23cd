"""`AsyncSignalClient` and `AsyncSignalRun`: the async twins of `SignalClient` / `SignalRun`.

Same methods, arguments and answers as in `client`, as coroutines; `training()` and
`inference()` hand out `AsyncTrainingClient` / `AsyncInferenceClient`s sharing this client's
`httpx.AsyncClient`. Only the I/O differs from the sync client: request building, validation
and retry decisions are the same functions (`_calls`, `_core`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from . import _calls
from ._core import RetryPolicy, resolve_api_key, resolve_base_url
from ._http import AsyncTransport
from .client import DEFAULT_TIMEOUT
from .inference import INFERENCE_TIMEOUT, AsyncInferenceClient
from .training import TRAINING_TIMEOUT, AsyncTrainingClient
from .types import RunConfig


class AsyncSignalClient:
    """Asynchronous client of a Frontier Signal server (arguments as `SignalClient`).

    Args:
        api_key: API key (`sk-...`); default `$FRONTIER_SIGNAL_API_KEY`.
        base_url: Server root; default `$FRONTIER_SIGNAL_BASE_URL` or `http://127.0.0.1:8000`.
        timeout: Seconds to wait for each answer (the Simple API uses it for every call).
        max_retries: Retries on connection errors, 408, 409, 429 and 5xx, with backoff from
            0.5 s to 8 s honouring `Retry-After`; a POST keeps its idempotency key.
        http_client: An `httpx.AsyncClient` to use instead of a new one (not closed by `aclose()`).
        sleep: Replaces `asyncio.sleep` between retries (for tests).

    Raises:
        AuthenticationError: No API key given or in the environment.

    Example:
        >>> async with AsyncSignalClient() as client:
        ...     run = await client.create_run(base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
        ...     await run.forward_backward([{"text": "Hello world"}])
        ...     await run.optim_step()
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        *,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.max_retries = max_retries
        self._sleep = sleep
        self._transport = AsyncTransport(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries),
            http_client=http_client,
            sleep=sleep,
        )

    # ----- models and runs ----------------------------------------------------------------

    async def list_models(self) -> list[str]:
        """Names of the base models this server can train on."""
        return _calls.read_model_ids(await self._transport.request(_calls.list_models()))

    async def list_runs(self) -> list[dict[str, Any]]:
        """Status of every run of this key's tenant."""
        return _calls.read_data(await self._transport.request(_calls.list_runs()))

    async def create_run(
        self,
        base_model: str | RunConfig | None = None,
        *,
        config: RunConfig | None = None,
        lora_r: int = 32,
        lora_alpha: float = 64,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | None = None,
        optimizer: str = "adamw_8bit",
        learning_rate: float = 3e-4,
        weight_decay: float = 0.01,
        max_seq_length: int = 2048,
        bf16: bool = True,
        gradient_checkpointing: bool = True,
        seed: int | None = None,
    ) -> AsyncSignalRun:
        """Create a training run: a fresh LoRA adapter on `base_model`.

        Pass either the fields (see `RunConfig` for their meaning) or a `RunConfig` (as the
        first argument or `config=`).

        Returns:
            An `AsyncSignalRun` handle (`run.run_id`).

        Raises:
            ValidationError: A bad field value (checked locally, then by the server).
            NotFoundError: The server has no such base model (the message lists those it has).
        """
        fields = dict(
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_target_modules=lora_target_modules,
            optimizer=optimizer,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            max_seq_length=max_seq_length,
            bf16=bf16,
            gradient_checkpointing=gradient_checkpointing,
            seed=seed,
        )
        run_config = _calls.run_config(base_model, config, fields)
        status = await self._transport.request(_calls.create_run(run_config))
        return AsyncSignalRun(self, status["run_id"], status)

    async def get_run(self, run_id: str) -> AsyncSignalRun:
        """A handle on an existing run (checks that it exists)."""
        return AsyncSignalRun(self, run_id, await self.get_status(run_id))

    async def get_status(self, run_id: str) -> dict[str, Any]:
        """The run's status: `{"run_id", "base_model", "status", "step", "config", ...}`."""
        return await self._transport.request(_calls.get_run(run_id))

    async def get_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """One row per optimizer step: `{"step", "loss", "grad_norm", "learning_rate", ...}`."""
        return _calls.read_data(await self._transport.request(_calls.get_metrics(run_id)))

    async def list_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """The run's saved checkpoints, oldest first."""
        return _calls.read_data(await self._transport.request(_calls.list_checkpoints(run_id)))

    async def delete_run(self, run_id: str) -> dict[str, Any]:
        """Delete a run: `{"run_id", "deleted": True}`."""
        return await self._transport.request(_calls.delete_run(run_id))

    # ----- Simple API -----------------------------------------------------------------------

    async def forward_backward(
        self, run_id: str, batch: Any, accumulate: bool = False
    ) -> dict[str, Any]:
        """Mean loss per trained token of `batch` and its gradient (see `AsyncSignalRun`)."""
        return await self._transport.request(_calls.forward_backward(run_id, batch, accumulate))

    async def optim_step(self, run_id: str, learning_rate: float | None = None) -> dict[str, Any]:
        """Apply the pending gradient: `{"step", "learning_rate", "grad_norm", "metrics"}`."""
        return await self._transport.request(_calls.optim_step(run_id, learning_rate))

    async def sample(
        self,
        run_id: str,
        prompts: list[str],
        max_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.9,
        return_logprobs: bool = False,
        *,
        step: int | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
        min_p: float | None = None,
        logit_bias: dict[int, float] | None = None,
    ) -> dict[str, Any]:
        """Continue each prompt: `{"outputs", "logprobs", "finish_reasons", "step"}`.

        `min_p` (0..1) drops tokens less likely than min_p times the most likely one;
        `logit_bias` adds a bias in [-100, 100] to the given token ids' logits.
        """
        call = _calls.sample(
            run_id,
            prompts,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            return_logprobs=return_logprobs,
            step=step,
            seed=seed,
            stop=stop,
            min_p=min_p,
            logit_bias=logit_bias,
        )
        return await self._transport.request(call)

    async def save_state(
        self,
        run_id: str,
        mode: str = "adapter",
        push_to_hub: bool = False,
        hub_model_id: str | None = None,
    ) -> dict[str, Any]:
        """Save a checkpoint: `{"checkpoint_id", "checkpoint_path", "artifact_uri", ...}`."""
        return await self._transport.request(
            _calls.save_state(run_id, mode, push_to_hub, hub_model_id)
        )

    # ----- specialised clients ----------------------------------------------------------------

    def training(
        self, run_id: str, timeout: float = TRAINING_TIMEOUT, max_retries: int = 3
    ) -> AsyncTrainingClient:
        """An `AsyncTrainingClient` for `run_id` sharing this client's connection pool."""
        return AsyncTrainingClient(
            run_id,
            self.api_key,
            self.base_url,
            timeout,
            max_retries,
            http_client=self._transport.http_client,
            sleep=self._sleep,
        )

    def inference(
        self,
        run_id: str,
        step: int | None = None,
        batch_size: int = 8,
        timeout: float = INFERENCE_TIMEOUT,
        max_retries: int = 3,
    ) -> AsyncInferenceClient:
        """An `AsyncInferenceClient` for `run_id` sharing this client's connection pool."""
        return AsyncInferenceClient(
            run_id,
            self.api_key,
            self.base_url,
            step,
            batch_size,
            timeout,
            max_retries,
            http_client=self._transport.http_client,
            sleep=self._sleep,
        )

    async def aclose(self) -> None:
        """Close the connection pool (unless it was passed in as `http_client`)."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncSignalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncSignalClient(base_url={self.base_url!r})"


class AsyncSignalRun:
    """A handle on one run; its methods are the client's Simple API with `run_id` filled in.

    Attributes:
        run_id: The run's id (`run_<hex>`).
        info: The run status the server answered when this handle was made.
    """

    def __init__(
        self, client: AsyncSignalClient, run_id: str, info: dict[str, Any] | None = None
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.info = info or {}

    @property
    def base_model(self) -> str | None:
        """The run's base model, as known when the handle was made."""
        return self.info.get("base_model")

    async def forward_backward(self, batch: Any, accumulate: bool = False) -> dict[str, Any]:
        """Compute the mean loss per trained token of `batch` and its gradient.

        Args:
            batch: Examples: `{"text": ...}`, `{"messages": [...]}` dicts or `TrainingExample`s.
            accumulate: Add to the pending gradient instead of clearing it first.

        Returns:
            `{"loss", "step", "grad_norm", "grad_stats", "tokens"}`; `step` is the step this
            gradient will become.
        """
        return await self.client.forward_backward(self.run_id, batch, accumulate)

    async def optim_step(self, learning_rate: float | None = None) -> dict[str, Any]:
        """Apply the pending gradient (`learning_rate` overrides for this step only).

        Returns:
            `{"step", "learning_rate", "grad_norm", "metrics"}`.
        """
        return await self.client.optim_step(self.run_id, learning_rate)

    async def sample(
        self,
        prompts: list[str],
        max_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.9,
        return_logprobs: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """Continue each raw-text prompt with the current weights (or `step=N`'s).

        Returns:
            `{"outputs": [str], "logprobs": [[float]] | None, "finish_reasons", "step"}`.
        """
        return await self.client.sample(
            self.run_id, prompts, max_tokens, temperature, top_p, return_logprobs, **options
        )

    async def save_state(
        self, mode: str = "adapter", push_to_hub: bool = False, hub_model_id: str | None = None
    ) -> dict[str, Any]:
        """Save a checkpoint, optionally pushed to the HF Hub. Modes: `"adapter"` (PEFT adapter
        + optimizer state), `"merged"` (a transformers folder), `"gguf"` / `"gguf-q8_0"` (for
        llama.cpp and Ollama: merged model, base model and LoRA adapter as f16 / q8_0 GGUFs).

        Returns:
            `{"checkpoint_id", "checkpoint_path", "artifact_uri", "mode", "step",
            "pushed_to_hub", "hub_model_id", "files"}` (`files`: name → size in bytes).
        """
        return await self.client.save_state(self.run_id, mode, push_to_hub, hub_model_id)

    async def get_status(self) -> dict[str, Any]:
        """The run's current status (see `AsyncSignalClient.get_status`)."""
        self.info = await self.client.get_status(self.run_id)
        return self.info

    async def get_metrics(self) -> list[dict[str, Any]]:
        """The server's per-step history (see `AsyncSignalClient.get_metrics`)."""
        return await self.client.get_metrics(self.run_id)

    def training(self, **kwargs: Any) -> AsyncTrainingClient:
        """An `AsyncTrainingClient` on this run (arguments as `AsyncSignalClient.training`)."""
        return self.client.training(self.run_id, **kwargs)

    def inference(self, **kwargs: Any) -> AsyncInferenceClient:
        """An `AsyncInferenceClient` on this run (arguments as `AsyncSignalClient.inference`)."""
        return self.client.inference(self.run_id, **kwargs)

    def __repr__(self) -> str:
        return f"AsyncSignalRun(run_id={self.run_id!r}, base_model={self.base_model!r})"
