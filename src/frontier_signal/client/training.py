"""`TrainingClient` and `AsyncTrainingClient`: the Advanced Training API of one run.

Training-oriented defaults (1 hour timeout, exponential backoff from 0.5 s to 8 s), convenience
loops (`train_batch`, `train_epoch` with a tqdm bar) and metrics read back from the server so
they survive a restart. A client built by `SignalClient.training()` borrows its parent's
connection pool; closing it leaves the pool open. The HTTP and retry machinery is in `_http`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpx
from tqdm import tqdm

from . import _calls
from ._core import RetryPolicy, resolve_api_key, resolve_base_url
from ._http import AsyncTransport, SyncTransport
from .loggers import TrainingLogger

TRAINING_TIMEOUT = 3600


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def metrics_summary(
    rows: list[dict[str, Any]], status: dict[str, Any], own_losses: list[float]
) -> dict[str, Any]:
    """`get_metrics()`'s answer from the server's per-step rows and the run status.

    `avg_loss` averages this client's forward_backward losses; when this client made none, the
    server's loss history (so a fresh client on an old run still reports one).
    """
    loss_history = [row["loss"] for row in rows if row.get("loss") is not None]
    return {
        "current_step": status.get("step", rows[-1]["step"] if rows else 0),
        "avg_loss": _mean(own_losses) if own_losses else _mean(loss_history),
        "loss_history": loss_history,
        "grad_norms": [row["grad_norm"] for row in rows if row.get("grad_norm") is not None],
    }


def merge_train_batch(forward: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """`train_batch`'s answer: the forward_backward result with the optimizer step's fields."""
    return {**forward, "step": step["step"], "learning_rate": step.get("learning_rate")}


def step_metrics(result: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the loggers and `on_step` get for one `train_batch`: loss, grad norm (of the
    applied step), learning rate, tokens, and tokens/s over the batch's wall time."""
    tokens = int(result.get("tokens") or 0)
    return {
        "loss": result["loss"],
        "grad_norm": result.get("grad_norm"),
        "learning_rate": result.get("learning_rate"),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
    }


StepHook = Callable[[int, dict[str, Any]], Any]


class _EpochTally:
    """Running totals of `train_epoch`, and each step handed to the loggers and `on_step`."""

    def __init__(
        self,
        clock: Callable[[], float],
        loggers: Sequence[TrainingLogger] = (),
        on_step: StepHook | None = None,
    ) -> None:
        self.clock = clock
        self.started = self.last = clock()
        self.losses: list[float] = []
        self.tokens = 0
        self.loggers = list(loggers)
        self.on_step = on_step

    def add(self, result: dict[str, Any], bar: Any) -> Any:
        """Count a step; returns what `on_step` returned (an awaitable in async loops)."""
        now = self.clock()
        self.losses.append(result["loss"])
        self.tokens += int(result.get("tokens") or 0)
        bar.update(1)
        bar.set_postfix(loss=f"{result['loss']:.4f}", step=result["step"], refresh=False)
        metrics = step_metrics(result, now - self.last)
        self.last = now
        for logger in self.loggers:
            logger.log(result["step"], metrics)
        return self.on_step(result["step"], metrics) if self.on_step is not None else None

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def summary(self) -> dict[str, Any]:
        return {
            "avg_loss": _mean(self.losses),
            "steps": len(self.losses),
            "tokens": self.tokens,
            "seconds": self.clock() - self.started,
        }


def _progress_bar(dataloader: Any, progress: bool, run_id: str) -> Any:
    total = len(dataloader) if hasattr(dataloader, "__len__") else None
    return tqdm(total=total, disable=not progress, desc=f"train {run_id}", unit="batch")


class TrainingClient:
    """Fine-grained training of one run, with state tracking.

    Args:
        run_id: The run to train.
        api_key: API key; default `$FRONTIER_SIGNAL_API_KEY`.
        base_url: Server root; default `$FRONTIER_SIGNAL_BASE_URL` or `http://127.0.0.1:8000`.
        timeout: Seconds to wait for each answer (training steps can queue behind others).
        max_retries: Retries on connection errors, 408, 409, 429 and 5xx (same idempotency key).
        http_client: An `httpx.Client` to borrow (it is not closed by this client).
        sleep: Replaces `time.sleep` between retries (for tests).
        clock: Replaces `time.monotonic` for `train_epoch`'s `seconds` (for tests).

    Raises:
        AuthenticationError: No API key given or in the environment.
    """

    def __init__(
        self,
        run_id: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = TRAINING_TIMEOUT,
        max_retries: int = 3,
        *,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.run_id = run_id
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.max_retries = max_retries
        self._transport = SyncTransport(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries),
            http_client=http_client,
            sleep=sleep,
        )
        self._clock = clock or time.monotonic
        self._losses: list[float] = []

    def forward_backward(self, batch: Any, accumulate: bool = False) -> dict[str, Any]:
        """Compute the batch's mean loss per trained token and its gradient.

        Args:
            batch: Examples: `{"text": ...}`, `{"messages": [...]}` dicts or `TrainingExample`s.
            accumulate: Add to the pending gradient instead of replacing it.

        Returns:
            `{"loss", "step", "grad_norm", "grad_stats", "tokens"}`.
        """
        result = self._transport.request(_calls.forward_backward(self.run_id, batch, accumulate))
        self._losses.append(result["loss"])
        return result

    def optim_step(self, learning_rate: float | None = None) -> dict[str, Any]:
        """Apply the pending gradient; `learning_rate` overrides the run's for this step only.

        Returns:
            `{"step", "learning_rate", "grad_norm", "metrics"}`.
        """
        return self._transport.request(_calls.optim_step(self.run_id, learning_rate))

    def train_batch(self, batch_data: Any, learning_rate: float | None = None) -> dict[str, Any]:
        """`forward_backward` then `optim_step`; the first's result with the step made."""
        forward = self.forward_backward(batch_data)
        return merge_train_batch(forward, self.optim_step(learning_rate))

    def train_epoch(
        self,
        dataloader: Iterable[Any],
        progress: bool = True,
        *,
        loggers: Sequence[TrainingLogger] = (),
        on_step: StepHook | None = None,
    ) -> dict[str, Any]:
        """`train_batch` on every batch of `dataloader` (any iterable of batches).

        Args:
            dataloader: Batches; its `len()` sizes the progress bar when it has one.
            progress: Show a tqdm progress bar.
            loggers: Each gets `log(step, metrics)` after every step (`client.loggers`:
                JSONL, TensorBoard, W&B) and `flush()` at the end; they stay open.
            on_step: Called as `on_step(step, metrics)` after every step; `metrics` has
                `loss`, `grad_norm`, `learning_rate`, `tokens`, `seconds`, `tokens_per_s`.

        Returns:
            `{"avg_loss", "steps", "tokens", "seconds"}` (`avg_loss`: mean of the batch losses).
        """
        tally = _EpochTally(self._clock, loggers, on_step)
        with _progress_bar(dataloader, progress, self.run_id) as bar:
            for batch in dataloader:
                tally.add(self.train_batch(batch), bar)
        tally.flush()
        return tally.summary()

    def save_checkpoint(
        self, mode: str = "adapter", push_to_hub: bool = False, hub_model_id: str | None = None
    ) -> dict[str, Any]:
        """Save the run (`"adapter"`, `"merged"`, `"gguf"`, `"gguf-q8_0"`); the same answer as
        `SignalRun.save_state`."""
        return self._transport.request(
            _calls.save_state(self.run_id, mode, push_to_hub, hub_model_id)
        )

    def get_metrics(self) -> dict[str, Any]:
        """`{"current_step", "avg_loss", "loss_history", "grad_norms"}`, read from the server."""
        rows = _calls.read_data(self._transport.request(_calls.get_metrics(self.run_id)))
        status = self._transport.request(_calls.get_run(self.run_id))
        return metrics_summary(rows, status, self._losses)

    def close(self) -> None:
        """Release the connection pool if this client owns it (not a borrowed one)."""
        self._transport.close()

    def __enter__(self) -> TrainingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TrainingClient(run_id={self.run_id!r}, base_url={self.base_url!r})"


class AsyncTrainingClient:
    """The async twin of `TrainingClient`: same arguments, methods are coroutines.

    `train_epoch` accepts a sync or an async iterable of batches; `sleep` is an async callable.
    """

    def __init__(
        self,
        run_id: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = TRAINING_TIMEOUT,
        max_retries: int = 3,
        *,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.run_id = run_id
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.max_retries = max_retries
        self._transport = AsyncTransport(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries),
            http_client=http_client,
            sleep=sleep,
        )
        self._clock = clock or time.monotonic
        self._losses: list[float] = []

    async def forward_backward(self, batch: Any, accumulate: bool = False) -> dict[str, Any]:
        """See `TrainingClient.forward_backward`."""
        call = _calls.forward_backward(self.run_id, batch, accumulate)
        result = await self._transport.request(call)
        self._losses.append(result["loss"])
        return result

    async def optim_step(self, learning_rate: float | None = None) -> dict[str, Any]:
        """See `TrainingClient.optim_step`."""
        return await self._transport.request(_calls.optim_step(self.run_id, learning_rate))

    async def train_batch(
        self, batch_data: Any, learning_rate: float | None = None
    ) -> dict[str, Any]:
        """See `TrainingClient.train_batch`."""
        forward = await self.forward_backward(batch_data)
        return merge_train_batch(forward, await self.optim_step(learning_rate))

    async def train_epoch(
        self,
        dataloader: Iterable[Any] | AsyncIterable[Any],
        progress: bool = True,
        *,
        loggers: Sequence[TrainingLogger] = (),
        on_step: StepHook | None = None,
    ) -> dict[str, Any]:
        """See `TrainingClient.train_epoch`; `dataloader` may also be an async iterable, and
        `on_step` a coroutine function (it is awaited)."""
        tally = _EpochTally(self._clock, loggers, on_step)

        async def step(batch: Any) -> None:
            hooked = tally.add(await self.train_batch(batch), bar)
            if inspect.isawaitable(hooked):
                await hooked

        with _progress_bar(dataloader, progress, self.run_id) as bar:
            if isinstance(dataloader, AsyncIterable):
                async for batch in dataloader:
                    await step(batch)
            else:
                for batch in dataloader:
                    await step(batch)
        tally.flush()
        return tally.summary()

    async def save_checkpoint(
        self, mode: str = "adapter", push_to_hub: bool = False, hub_model_id: str | None = None
    ) -> dict[str, Any]:
        """See `TrainingClient.save_checkpoint`."""
        call = _calls.save_state(self.run_id, mode, push_to_hub, hub_model_id)
        return await self._transport.request(call)

    async def get_metrics(self) -> dict[str, Any]:
        """See `TrainingClient.get_metrics`."""
        rows = _calls.read_data(await self._transport.request(_calls.get_metrics(self.run_id)))
        status = await self._transport.request(_calls.get_run(self.run_id))
        return metrics_summary(rows, status, self._losses)

    async def aclose(self) -> None:
        """Release the connection pool if this client owns it (not a borrowed one)."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncTrainingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncTrainingClient(run_id={self.run_id!r}, base_url={self.base_url!r})"
