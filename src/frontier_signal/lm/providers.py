"""The providers: one protocol, two implementations on the official `openai.AsyncOpenAI`.

`SignalProvider` talks to a Frontier Signal server (`<root>/v1`) and can warm models;
`OpenAIProvider` talks to any OpenAI-compatible endpoint (`OPENAI_BASE_URL`, default OpenAI
itself) and treats warmup as a no-op. Retries are the `openai` client's own (`max_retries`,
exponential backoff honouring `Retry-After`); nothing here loops again on top of them.
No torch and nothing from the server side is imported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import openai

from ._chat import as_dict, async_chunks, chat_kwargs
from .config import LMConfig
from .warmup import WarmupCache, warmup_with_client

Message = Mapping[str, Any]
Tool = Mapping[str, Any]


@runtime_checkable
class UnifiedLMProvider(Protocol):
    """What every provider offers (the seed's unified interface)."""

    name: str
    config: LMConfig

    async def warmup(self, model: str, force: bool = False) -> bool:
        """Make `model` ready to answer; True when it is."""
        ...

    async def create_chat_completion(
        self,
        model: str,
        messages: Sequence[Message],
        tools: Sequence[Tool] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        stream: bool = False,
        **params: Any,
    ) -> Any:
        """A chat completion as a dict, or with `stream=True` an async iterator of chunk dicts."""
        ...

    async def close(self) -> None:
        """Release the HTTP connections."""
        ...


class _OpenAICompatibleProvider:
    """The part both providers share: an `AsyncOpenAI` client and the chat call."""

    name = ""

    def __init__(
        self,
        config: LMConfig | None = None,
        *,
        http_client: Any = None,
        **overrides: Any,
    ) -> None:
        if config is not None and overrides:
            raise TypeError("pass either config= or keyword overrides, not both")
        self.config = config if config is not None else LMConfig.from_env(self.name, **overrides)
        self.client = openai.AsyncOpenAI(
            base_url=self._client_base_url(),
            api_key=self.config.api_key,
            timeout=self.config.timeout,
            max_retries=self.config.max_retries,
            http_client=http_client,
        )

    def _client_base_url(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    async def create_chat_completion(
        self,
        model: str,
        messages: Sequence[Message],
        tools: Sequence[Tool] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        stream: bool = False,
        **params: Any,
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """Create a chat completion.

        Args:
            model: Model name (for the server: a base model, run id or run checkpoint).
            messages: OpenAI-style messages (`system`, `user`, `assistant`, `tool`).
            tools: OpenAI tool definitions (`{"type": "function", "function": {...}}`).
            tool_choice: `"auto"`, `"none"`, `"required"` or `{"type": "function", ...}`.
            stream: Return an async iterator of chunk dicts instead of one response.
            **params: `temperature`, `max_tokens`, `seed`, `stop`, ...; names the `openai`
                client does not know are sent in the request body as they are.

        Returns:
            The response as a plain dict (`response["choices"][0]["message"]["content"]`);
            tool calls keep `id`, `type: "function"` and JSON-string `arguments`.

        Raises:
            openai.APIError: The server's error, after the configured retries (e.g.
                `openai.RateLimitError`, `openai.NotFoundError`, `openai.APIConnectionError`).
        """
        kwargs = chat_kwargs(model, messages, tools, tool_choice, stream, params)
        response = await self.client.chat.completions.create(**kwargs)
        if stream:
            return async_chunks(response)
        return as_dict(response)

    async def close(self) -> None:
        """Close the HTTP connections (safe to call twice)."""
        await self.client.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class SignalProvider(_OpenAICompatibleProvider):
    """A Frontier Signal server through its OpenAI-compatible API (the seed's `SynthProvider`).

    Args:
        config: Where to connect; default `LMConfig.from_env("signal", **overrides)`.
        warmup_cache: Default the per-process cache (10 minutes per server and model).
        sleep: The polling sleep of `warmup`; default `asyncio.sleep`.
        http_client: An `httpx` / `httpx2` async client to hand to `openai.AsyncOpenAI`.
        **overrides: `base_url`, `api_key`, `timeout`, `max_retries` (instead of `config`).
    """

    name = "signal"

    def __init__(
        self,
        config: LMConfig | None = None,
        *,
        warmup_cache: WarmupCache | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        http_client: Any = None,
        **overrides: Any,
    ) -> None:
        super().__init__(config, http_client=http_client, **overrides)
        self._warmup_cache = warmup_cache
        self._sleep = sleep

    def _client_base_url(self) -> str:
        return self.config.api_url

    async def warmup(self, model: str, force: bool = False, max_attempts: int = 30) -> bool:
        """Load `model` on the server and wait until it is ready (at most `max_attempts` s).

        Returns:
            True when ready (remembered for 10 minutes unless `force`); False on any failure.
        """
        return await warmup_with_client(
            self.client,
            model,
            server=self.config.server_root,
            max_attempts=max_attempts,
            force=force,
            cache=self._warmup_cache,
            sleep=self._sleep,
        )


class OpenAIProvider(_OpenAICompatibleProvider):
    """OpenAI, or any OpenAI-compatible endpoint (`OPENAI_BASE_URL` is used as given).

    Args:
        config: Where to connect; default `LMConfig.from_env("openai", **overrides)`
            (`OPENAI_API_KEY`, `OPENAI_BASE_URL`).
        http_client: An `httpx` / `httpx2` async client to hand to `openai.AsyncOpenAI`.
        **overrides: `base_url`, `api_key`, `timeout`, `max_retries` (instead of `config`).
    """

    name = "openai"

    def _client_base_url(self) -> str:
        return self.config.base_url

    async def warmup(self, model: str, force: bool = False) -> bool:
        """Nothing to warm on an OpenAI endpoint: always True, without a request."""
        return True


PROVIDER_CLASSES: dict[str, type[_OpenAICompatibleProvider]] = {
    "signal": SignalProvider,
    "openai": OpenAIProvider,
}


def create_provider(provider_type: str, **config: Any) -> UnifiedLMProvider:
    """Create a provider by name.

    Args:
        provider_type: `"signal"` (a Frontier Signal server) or `"openai"`.
        **config: `config=LMConfig(...)`, or `base_url`, `api_key`, `timeout`, `max_retries`
            overriding the environment and `.env`.

    Returns:
        The provider; close it with `await provider.close()` (or `async with`).

    Raises:
        ValueError: Unknown `provider_type` (the message lists the choices).
        ConfigError: Configuration missing or malformed (the message names the variable).
    """
    cls = PROVIDER_CLASSES.get(provider_type)
    if cls is None:
        raise ValueError(
            f"unknown provider {provider_type!r}; choose one of: {', '.join(PROVIDER_CLASSES)}"
        )
    return cls(**config)  # type: ignore[return-value]
