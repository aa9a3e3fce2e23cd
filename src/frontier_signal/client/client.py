"""`SignalClient` and `SignalRun`: the synchronous entry point and Simple API of the SDK.

`SignalClient` lists models and runs, creates runs, offers every run operation as a method
taking a `run_id` (the Simple API), and hands out `TrainingClient` / `InferenceClient`s that
share its connection pool. `SignalRun` is a run handle whose methods fill in the `run_id`.
The async twins are in `async_client`; sending and retries are in `_http`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from . import _calls
from ._core import RetryPolicy, resolve_api_key, resolve_base_url
from ._http import SyncTransport
from .inference import INFERENCE_TIMEOUT, InferenceClient
from .training import TRAINING_TIMEOUT, TrainingClient
from .types import RunConfig

DEFAULT_TIMEOUT = 300


class SignalClient:
    """Synchronous client of a Frontier Signal server.

    Args:
        api_key: API key (`sk-...`); default `$FRONTIER_SIGNAL_API_KEY`.
        base_url: Server root; default `$FRONTIER_SIGNAL_BASE_URL` or `http://127.0.0.1:8000`.
        timeout: Seconds to wait for each answer (the Simple API uses it for every call).
        max_retries: Retries on connection errors, 408, 409, 429 and 5xx, with backoff from
            0.5 s to 8 s honouring `Retry-After`; a POST keeps its idempotency key.
        http_client: An `httpx.Client` to use instead of a new one (not closed by `close()`).
        sleep: Replaces `time.sleep` between retries (for tests).

    Raises:
        AuthenticationError: No API key given or in the environment.

    Example:
        >>> with SignalClient() as client:
        ...     run = client.create_run(base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
        ...     run.forward_backward([{"text": "Hello world"}])
        ...     run.optim_step()
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        *,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.max_retries = max_retries
        self._sleep = sleep
        self._transport = SyncTransport(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries),
            http_client=http_client,
            sleep=sleep,
        )

    # ----- models and runs ----------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Names of the base models this server can train on."""
        return _calls.read_model_ids(self._transport.request(_calls.list_models()))

    def list_runs(self) -> list[dict[str, Any]]:
        """Status of every run of this key's tenant."""
        return _calls.read_data(self._transport.request(_calls.list_runs()))

    def create_run(
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
    ) -> SignalRun:
        """Create a training run: a fresh LoRA adapter on `base_model`.

        Pass either the fields (see `RunConfig` for their meaning) or a `RunConfig` (as the
        first argument or `config=`).

        Returns:
            A `SignalRun` handle (`run.run_id`).

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
        status = self._transport.request(_calls.create_run(run_config))
        return SignalRun(self, status["run_id"], status)

    def get_run(self, run_id: str) -> SignalRun:
        """A handle on an existing run (checks that it exists)."""
        return SignalRun(self, run_id, self.get_status(run_id))

    def get_status(self, run_id: str) -> dict[str, Any]:
        """The run's status: `{"run_id", "base_model", "status", "step", "config", ...}`."""
        return self._transport.request(_calls.get_run(run_id))

    def get_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """One row per optimizer step: `{"step", "loss", "grad_norm", "learning_rate", ...}`."""
        return _calls.read_data(self._transport.request(_calls.get_metrics(run_id)))

    def list_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """The run's saved checkpoints, oldest first."""
        return _calls.read_data(self._transport.request(_calls.list_checkpoints(run_id)))

    def delete_run(self, run_id: str) -> dict[str, Any]:
        """Delete a run: `{"run_id", "deleted": True}`."""
        return self._transport.request(_calls.delete_run(run_id))

    # ----- Simple API -----------------------------------------------------------------------

    def forward_backward(self, run_id: str, batch: Any, accumulate: bool = False) -> dict[str, Any]:
        """Mean loss per trained token of `batch` and its gradient (see `SignalRun`)."""
        return self._transport.request(_calls.forward_backward(run_id, batch, accumulate))

    def optim_step(self, run_id: str, learning_rate: float | None = None) -> dict[str, Any]:
        """Apply the pending gradient: `{"step", "learning_rate", "grad_norm", "metrics"}`."""
        return self._transport.request(_calls.optim_step(run_id, learning_rate))

    def sample(
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
        return self._transport.request(call)

    def save_state(
        self,
        run_id: str,
        mode: str = "adapter",
        push_to_hub: bool = False,
        hub_model_id: str | None = None,
    ) -> dict[str, Any]:
        """Save a checkpoint: `{"checkpoint_id", "checkpoint_path", "artifact_uri", ...}`."""
        return self._transport.request(_calls.save_state(run_id, mode, push_to_hub, hub_model_id))

    # ----- specialised clients ----------------------------------------------------------------

    def training(
        self, run_id: str, timeout: float = TRAINING_TIMEOUT, max_retries: int = 3
    ) -> TrainingClient:
        """A `TrainingClient` for `run_id` sharing this client's connection pool."""
        return TrainingClient(
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
    ) -> InferenceClient:
        """An `InferenceClient` for `run_id` sharing this client's connection pool."""
        return InferenceClient(
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

    def close(self) -> None:
        """Close the connection pool (unless it was passed in as `http_client`)."""
        self._transport.close()

    def __enter__(self) -> SignalClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SignalClient(base_url={self.base_url!r})"


class SignalRun:
    """A handle on one run; its methods are the client's Simple API with `run_id` filled in.

    Attributes:
        run_id: The run's id (`run_<hex>`).
        info: The run status the server answered when this handle was made.
    """

    def __init__(
        self, client: SignalClient, run_id: str, info: dict[str, Any] | None = None
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.info = info or {}

    @property
    def base_model(self) -> str | None:
        """The run's base model, as known when the handle was made."""
        return self.info.get("base_model")

    def forward_backward(self, batch: Any, accumulate: bool = False) -> dict[str, Any]:
        """Compute the mean loss per trained token of `batch` and its gradient.

        Args:
            batch: Examples: `{"text": ...}`, `{"messages": [...]}` dicts or `TrainingExample`s.
            accumulate: Add to the pending gradient instead of clearing it first.

        Returns:
            `{"loss", "step", "grad_norm", "grad_stats", "tokens"}`; `step` is the step this
            gradient will become.
        """
        return self.client.forward_backward(self.run_id, batch, accumulate)

    def optim_step(self, learning_rate: float | None = None) -> dict[str, Any]:
        """Apply the pending gradient (`learning_rate` overrides for this step only).

        Returns:
            `{"step", "learning_rate", "grad_norm", "metrics"}`.
        """
        return self.client.optim_step(self.run_id, learning_rate)

    def sample(
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
        return self.client.sample(
            self.run_id, prompts, max_tokens, temperature, top_p, return_logprobs, **options
        )

    def save_state(
        self, mode: str = "adapter", push_to_hub: bool = False, hub_model_id: str | None = None
    ) -> dict[str, Any]:
        """Save a checkpoint, optionally pushed to the HF Hub. Modes: `"adapter"` (PEFT adapter
        + optimizer state), `"merged"` (a transformers folder), `"gguf"` / `"gguf-q8_0"` (for
        llama.cpp and Ollama: merged model, base model and LoRA adapter as f16 / q8_0 GGUFs).

        Returns:
            `{"checkpoint_id", "checkpoint_path", "artifact_uri", "mode", "step",
            "pushed_to_hub", "hub_model_id", "files"}` (`files`: name → size in bytes).
        """
        return self.client.save_state(self.run_id, mode, push_to_hub, hub_model_id)

    def get_status(self) -> dict[str, Any]:
        """The run's current status (see `SignalClient.get_status`)."""
        self.info = self.client.get_status(self.run_id)
        return self.info

    def get_metrics(self) -> list[dict[str, Any]]:
        """The server's per-step history (see `SignalClient.get_metrics`)."""
        return self.client.get_metrics(self.run_id)

    def training(self, **kwargs: Any) -> TrainingClient:
        """A `TrainingClient` on this run (arguments as `SignalClient.training`)."""
        return self.client.training(self.run_id, **kwargs)

    def inference(self, **kwargs: Any) -> InferenceClient:
        """An `InferenceClient` on this run (arguments as `SignalClient.inference`)."""
        return self.client.inference(self.run_id, **kwargs)

    def __repr__(self) -> str:
        return f"SignalRun(run_id={self.run_id!r}, base_model={self.base_model!r})"
