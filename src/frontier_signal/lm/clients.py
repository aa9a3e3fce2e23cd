"""The clients: `UnifiedLMClient` (switch providers per call), `AsyncLMClient` and `LMClient`.

`UnifiedLMClient` creates each provider on first use and closes all of them on exit;
`create_chat_completion_async` is its one-shot form. `AsyncLMClient` / `LMClient` are the
seed's `AsyncSynthClient` / `SyncSynthClient`: one provider, OpenAI's method name
(`chat_completions_create`); the sync one is built on `openai.OpenAI`, not on an event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import openai

from ._chat import as_dict, chat_kwargs, sync_chunks
from .config import PROVIDERS, LMConfig, default_provider
from .providers import PROVIDER_CLASSES, Message, Tool, UnifiedLMProvider, create_provider
from .warmup import WarmupCache, warmup_with_sync_client


def _check_provider(name: str) -> str:
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; choose one of: {', '.join(PROVIDERS)}")
    return name


class UnifiedLMClient:
    """Chat with several providers through one object, choosing the provider per call.

    Args:
        provider: Default provider, `"signal"` or `"openai"`; default
            `$FRONTIER_SIGNAL_PROVIDER`, else `"signal"`.
        **config: `base_url`, `api_key`, `timeout`, `max_retries` applied to every provider
            this client creates (each provider otherwise reads its own variables).

    Use as `async with UnifiedLMClient() as client: ...`; providers are created on first use
    and all closed on exit (or by `close()`).
    """

    def __init__(self, provider: str | None = None, **config: Any) -> None:
        self.default_provider = _check_provider(provider or default_provider())
        self._config = config
        self._providers: dict[str, UnifiedLMProvider] = {}

    def get_provider(self, name: str | None = None) -> UnifiedLMProvider:
        """The provider `name` (default: this client's default), created on first use.

        Raises:
            ValueError: Unknown provider name.
            ConfigError: Its configuration is missing (the message names the variable).
        """
        name = _check_provider(name or self.default_provider)
        if name not in self._providers:
            self._providers[name] = create_provider(name, **self._config)
        return self._providers[name]

    async def warmup(self, model: str, provider: str | None = None, force: bool = False) -> bool:
        """Warm `model` on a provider (see `SignalProvider.warmup`); True when ready."""
        return await self.get_provider(provider).warmup(model, force=force)

    async def create_chat_completion(
        self,
        model: str,
        messages: Sequence[Message],
        provider: str | None = None,
        **params: Any,
    ) -> Any:
        """A chat completion from `provider` (default: this client's); see the providers.

        Args:
            model: Model name.
            messages: OpenAI-style messages.
            provider: `"signal"` or `"openai"`; default this client's default provider.
            **params: `tools`, `tool_choice`, `stream`, `temperature`, `max_tokens`, ...

        Returns:
            A plain dict, or with `stream=True` an async iterator of chunk dicts.
        """
        return await self.get_provider(provider).create_chat_completion(model, messages, **params)

    async def close(self) -> None:
        """Close every provider this client created."""
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.close()

    async def __aenter__(self) -> UnifiedLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def create_chat_completion_async(
    model: str,
    messages: Sequence[Message],
    provider: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    """One chat completion with a client opened and closed around it.

    Args:
        model: Model name.
        messages: OpenAI-style messages.
        provider: `"signal"` or `"openai"`; default `$FRONTIER_SIGNAL_PROVIDER`, else `"signal"`.
        **params: `tools`, `tool_choice`, `temperature`, `max_tokens`, ... (no `stream`: the
            client closes before a stream could be read).

    Returns:
        The response as a plain dict.
    """
    if params.get("stream"):
        raise ValueError("create_chat_completion_async cannot stream; use UnifiedLMClient")
    async with UnifiedLMClient(provider) as client:
        return await client.create_chat_completion(model, messages, **params)


class AsyncLMClient:
    """Async client with OpenAI's method name (the seed's `AsyncSynthClient`).

    Args:
        config: Where to connect; default read from the environment and `.env`.
        provider: `"signal"` (default) or `"openai"`.
        **overrides: `base_url`, `api_key`, `timeout`, `max_retries`, or the provider's test
            hooks (`http_client`, and for `signal` `warmup_cache`, `sleep`).
    """

    def __init__(
        self, config: LMConfig | None = None, *, provider: str = "signal", **overrides: Any
    ) -> None:
        cls = PROVIDER_CLASSES[_check_provider(provider)]
        self.provider: UnifiedLMProvider = cls(config, **overrides)  # type: ignore[assignment]

    @property
    def config(self) -> LMConfig:
        """The provider's configuration."""
        return self.provider.config

    async def warmup(self, model: str, force: bool = False) -> bool:
        """Warm `model`; True when ready (always True for the `openai` provider)."""
        return await self.provider.warmup(model, force=force)

    async def chat_completions_create(
        self,
        model: str,
        messages: Sequence[Message],
        tools: Sequence[Tool] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        stream: bool = False,
        **params: Any,
    ) -> Any:
        """Like `client.chat.completions.create`, answering a dict (or async chunk dicts)."""
        return await self.provider.create_chat_completion(
            model, messages, tools=tools, tool_choice=tool_choice, stream=stream, **params
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.provider.close()

    async def __aenter__(self) -> AsyncLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class LMClient:
    """Blocking client on `openai.OpenAI` (the seed's `SyncSynthClient`).

    Args:
        config: Where to connect; default read from the environment and `.env`.
        provider: `"signal"` (default) or `"openai"`.
        warmup_cache: Default the per-process cache.
        sleep: The polling sleep of `warmup`; default `time.sleep`.
        http_client: An `httpx` / `httpx2` client to hand to `openai.OpenAI`.
        **overrides: `base_url`, `api_key`, `timeout`, `max_retries` (instead of `config`).
    """

    def __init__(
        self,
        config: LMConfig | None = None,
        *,
        provider: str = "signal",
        warmup_cache: WarmupCache | None = None,
        sleep: Callable[[float], Any] | None = None,
        http_client: Any = None,
        **overrides: Any,
    ) -> None:
        self.provider_name = _check_provider(provider)
        if config is not None and overrides:
            raise TypeError("pass either config= or keyword overrides, not both")
        self.config = config if config is not None else LMConfig.from_env(provider, **overrides)
        self._warmup_cache = warmup_cache
        self._sleep = sleep
        self.client = openai.OpenAI(
            base_url=self.config.api_url if provider == "signal" else self.config.base_url,
            api_key=self.config.api_key,
            timeout=self.config.timeout,
            max_retries=self.config.max_retries,
            http_client=http_client,
        )

    def __repr__(self) -> str:
        return f"LMClient(provider={self.provider_name!r}, config={self.config!r})"

    def warmup(self, model: str, force: bool = False, max_attempts: int = 30) -> bool:
        """Warm `model` (polling once a second); True when ready, False on any failure.

        Always True for the `openai` provider.
        """
        if self.provider_name == "openai":
            return True
        return warmup_with_sync_client(
            self.client,
            model,
            server=self.config.server_root,
            max_attempts=max_attempts,
            force=force,
            cache=self._warmup_cache,
            sleep=self._sleep,
        )

    def chat_completions_create(
        self,
        model: str,
        messages: Sequence[Message],
        tools: Sequence[Tool] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        stream: bool = False,
        **params: Any,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Like `client.chat.completions.create`, answering a dict (or an iterator of chunks).

        Raises:
            openai.APIError: The server's error, after the configured retries.
        """
        kwargs = chat_kwargs(model, messages, tools, tool_choice, stream, params)
        response = self.client.chat.completions.create(**kwargs)
        if stream:
            return sync_chunks(response)
        return as_dict(response)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def __enter__(self) -> LMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
