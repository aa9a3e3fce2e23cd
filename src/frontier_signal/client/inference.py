"""`InferenceClient` and `AsyncInferenceClient`: the Advanced Inference API of one run.

Inference-oriented defaults (30 s timeout; one immediate retry, then backoff), optionally pinned
to the weights after `step` optimizer steps. `batch_sample` cuts prompts into chunks of
`batch_size` (sent concurrently by the async client), an opt-in response cache keyed by every
sampling argument, token streaming over SSE, and embeddings. The HTTP and retry machinery is in
`_http`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx

from . import _calls
from ._core import RetryPolicy, resolve_api_key, resolve_base_url
from ._http import AsyncTransport, SyncTransport

INFERENCE_TIMEOUT = 30
DEFAULT_MAX_CONCURRENCY = 4


class SampleCache:
    """Opt-in memory of sampled outputs, one entry per (prompt, sampling arguments, step).

    A hit returns the text sampled the first time, so with temperature > 0 and no `seed` a
    repeated prompt returns the same text rather than a fresh sample. With `step=None` the
    key does not see the run's weights move on: clear the cache after training further.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.entries: dict[str, str] = {}
        self.hits = 0
        self.misses = 0

    def missing(self, body: dict[str, Any]) -> list[str]:
        """The distinct prompts of `body` with no entry yet; counts hits and misses."""
        missing: list[str] = []
        for prompt in body["prompts"]:
            if _calls.cache_key(prompt, body) in self.entries:
                self.hits += 1
            else:
                self.misses += 1
                if prompt not in missing:
                    missing.append(prompt)
        return missing

    def store(self, body: dict[str, Any], prompts: list[str], outputs: list[str]) -> list[str]:
        """Remember `outputs` for `prompts`; return the outputs of all of `body`'s prompts."""
        for prompt, output in zip(prompts, outputs, strict=True):
            self.entries[_calls.cache_key(prompt, body)] = output
        return [self.entries[_calls.cache_key(prompt, body)] for prompt in body["prompts"]]

    def clear(self) -> None:
        self.entries.clear()
        self.hits = self.misses = 0

    def stats(self) -> dict[str, Any]:
        return {
            "cache_size": len(self.entries),
            "hits": self.hits,
            "misses": self.misses,
            "enabled": self.enabled,
        }


class _InferenceBase:
    """Configuration and cache controls shared by both inference clients."""

    def __init__(
        self,
        run_id: str,
        api_key: str | None,
        base_url: str | None,
        step: int | None,
        batch_size: int,
        timeout: float,
        max_retries: int,
    ) -> None:
        self.run_id = run_id
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.step = step
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self._retry = RetryPolicy(max_retries=max_retries, immediate_first_retry=True)
        self._cache = SampleCache()

    def enable_cache(self) -> None:
        """Remember outputs per prompt and sampling arguments; a repeat returns the same text."""
        self._cache.enabled = True

    def disable_cache(self) -> None:
        """Stop using the cache (its entries are kept until `clear_cache`)."""
        self._cache.enabled = False

    def clear_cache(self) -> None:
        """Forget every cached output and reset the hit/miss counters."""
        self._cache.clear()

    def get_cache_stats(self) -> dict[str, Any]:
        """`{"cache_size", "hits", "misses", "enabled"}` (hits and misses count prompts)."""
        return self._cache.stats()

    def _body(self, prompts: Any, sampling: dict[str, Any]) -> dict[str, Any]:
        return _calls.sample_body(_calls.check_prompts(prompts), step=self.step, **sampling)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(run_id={self.run_id!r}, step={self.step!r}, "
            f"base_url={self.base_url!r})"
        )


class InferenceClient(_InferenceBase):
    """Sampling, streaming and embeddings from one run.

    Args:
        run_id: The run to sample from.
        api_key: API key; default `$FRONTIER_SIGNAL_API_KEY`.
        base_url: Server root; default `$FRONTIER_SIGNAL_BASE_URL` or `http://127.0.0.1:8000`.
        step: Sample the weights after this many optimizer steps (None: the current weights).
        batch_size: Prompts per request in `batch_sample`.
        timeout: Seconds to wait for each answer.
        max_retries: Retries (the first at once, then with backoff) on connection errors,
            408, 409, 429 and 5xx.
        http_client: An `httpx.Client` to borrow (it is not closed by this client).
        sleep: Replaces `time.sleep` between retries (for tests).

    Raises:
        AuthenticationError: No API key given or in the environment.
    """

    def __init__(
        self,
        run_id: str,
        api_key: str | None = None,
        base_url: str | None = None,
        step: int | None = None,
        batch_size: int = 8,
        timeout: float = INFERENCE_TIMEOUT,
        max_retries: int = 3,
        *,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(run_id, api_key, base_url, step, batch_size, timeout, max_retries)
        self._transport = SyncTransport(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=timeout,
            retry=self._retry,
            http_client=http_client,
            sleep=sleep,
        )

    def sample(
        self,
        prompts: list[str],
        max_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.9,
        **kwargs: Any,
    ) -> list[str]:
        """Continue each prompt; one request for all of them.

        Args:
            prompts: Raw texts to continue.
            max_tokens: Most tokens generated per prompt.
            temperature: Sampling temperature (0 = greedy).
            top_p: Nucleus sampling mass.
            **kwargs: `seed`, `stop`, `min_p`, `logit_bias` ({token id: bias}).

        Returns:
            The generated texts, in the order of `prompts`.
        """
        sampling = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, **kwargs)
        body = self._body(prompts, sampling)
        if not self._cache.enabled:
            return self._sample(body)
        missing = self._cache.missing(body)
        outputs = self._sample({**body, "prompts": missing}) if missing else []
        return self._cache.store(body, missing, outputs)

    def _sample(self, body: dict[str, Any]) -> list[str]:
        answer = self._transport.request(_calls.sample_call(self.run_id, body))
        return _calls.read_outputs(body, answer)

    def batch_sample(
        self, prompts: list[str], batch_size: int | None = None, **kwargs: Any
    ) -> list[str]:
        """`sample` over chunks of `batch_size` prompts (default: the client's); input order."""
        chunks = _calls.chunks(_calls.check_prompts(prompts), batch_size or self.batch_size)
        return [output for chunk in chunks for output in self.sample(chunk, **kwargs)]

    def stream_sample(
        self,
        prompt: str,
        max_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.9,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """Yield `{"text", "token_id", "logprob"}` per token, then `{"text", "finish_reason",
        "usage"}`; the `text` of all events adds up to `sample`'s output (text a stop string may
        still claim is held back until it is settled).

        Raises:
            SignalAPIError: The subclass matching an error event sent mid-stream.
        """
        sampling = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, **kwargs)
        # Arguments are checked now; the request is sent when iteration starts.
        call = _calls.sample_stream(self.run_id, prompt, step=self.step, **sampling)
        return self._transport.stream(call)

    def embeddings(self, texts: list[str]) -> list[list[float]]:
        """Mean-pooled, L2-normalised final hidden states of the run (LoRA applied), per text."""
        call = _calls.embeddings(self.run_id, texts, self.step)
        return _calls.read_embeddings(self._transport.request(call))

    def close(self) -> None:
        """Release the connection pool if this client owns it (not a borrowed one)."""
        self._transport.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncInferenceClient(_InferenceBase):
    """The async twin of `InferenceClient`; `batch_sample` sends its chunks concurrently.

    Same arguments as `InferenceClient` (`sleep` is an async callable here).
    """

    def __init__(
        self,
        run_id: str,
        api_key: str | None = None,
        base_url: str | None = None,
        step: int | None = None,
        batch_size: int = 8,
        timeout: float = INFERENCE_TIMEOUT,
        max_retries: int = 3,
        *,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(run_id, api_key, base_url, step, batch_size, timeout, max_retries)
        self._transport = AsyncTransport(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=timeout,
            retry=self._retry,
            http_client=http_client,
            sleep=sleep,
        )

    async def sample(
        self,
        prompts: list[str],
        max_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.9,
        **kwargs: Any,
    ) -> list[str]:
        """See `InferenceClient.sample`."""
        sampling = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, **kwargs)
        body = self._body(prompts, sampling)
        if not self._cache.enabled:
            return await self._sample(body)
        missing = self._cache.missing(body)
        outputs = await self._sample({**body, "prompts": missing}) if missing else []
        return self._cache.store(body, missing, outputs)

    async def _sample(self, body: dict[str, Any]) -> list[str]:
        answer = await self._transport.request(_calls.sample_call(self.run_id, body))
        return _calls.read_outputs(body, answer)

    async def batch_sample(
        self,
        prompts: list[str],
        batch_size: int | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **kwargs: Any,
    ) -> list[str]:
        """`sample` over chunks of `batch_size`, at most `max_concurrency` requests at a time.

        Returns:
            The generated texts in the order of `prompts`.
        """
        chunks = _calls.chunks(_calls.check_prompts(prompts), batch_size or self.batch_size)
        limit = asyncio.Semaphore(max(1, max_concurrency))

        async def one(chunk: list[str]) -> list[str]:
            async with limit:
                return await self.sample(chunk, **kwargs)

        results = await asyncio.gather(*(one(chunk) for chunk in chunks))
        return [output for result in results for output in result]

    def stream_sample(
        self,
        prompt: str,
        max_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.9,
        **kwargs: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """See `InferenceClient.stream_sample`; use with `async for`."""
        sampling = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, **kwargs)
        call = _calls.sample_stream(self.run_id, prompt, step=self.step, **sampling)
        return self._transport.stream(call)

    async def embeddings(self, texts: list[str]) -> list[list[float]]:
        """See `InferenceClient.embeddings`."""
        call = _calls.embeddings(self.run_id, texts, self.step)
        return _calls.read_embeddings(await self._transport.request(call))

    async def aclose(self) -> None:
        """Release the connection pool if this client owns it (not a borrowed one)."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
