"""Turning our keyword arguments into an `openai` chat call, and its answers into plain dicts.

Shared by the async providers and the sync `LMClient`, so both send the same request: known
`chat.completions.create` parameters go as themselves, anything else (e.g. `top_k`) goes in
`extra_body`, where the `openai` client would otherwise reject it with a `TypeError`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from openai.resources.chat.completions import Completions

_KNOWN_PARAMS = frozenset(inspect.signature(Completions.create).parameters) - {"self"}


def chat_kwargs(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: str | Mapping[str, Any] | None,
    stream: bool,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of `client.chat.completions.create` for one call.

    `None` values are left out (the server's default applies), so `tools=None` sends no tools.
    """
    kwargs: dict[str, Any] = {"model": model, "messages": list(messages)}
    if tools is not None:
        kwargs["tools"] = list(tools)
    if tool_choice is not None:
        kwargs["tool_choice"] = tool_choice
    if stream:
        kwargs["stream"] = True
    extra_body = dict(params.get("extra_body") or {})
    for name, value in params.items():
        if name == "extra_body" or value is None:
            continue
        if name in _KNOWN_PARAMS:
            kwargs[name] = value
        else:
            extra_body[name] = value
    if extra_body:
        kwargs["extra_body"] = extra_body
    return kwargs


def as_dict(response: Any) -> dict[str, Any]:
    """A plain dict of an `openai` response model (tool-call arguments stay JSON strings)."""
    return response.model_dump()


async def async_chunks(stream: Any) -> AsyncIterator[dict[str, Any]]:
    """Chunk dicts of an `openai.AsyncStream`, closing the HTTP response however iteration ends."""
    try:
        async for chunk in stream:
            yield chunk.model_dump()
    finally:
        await stream.close()


def sync_chunks(stream: Any) -> Iterator[dict[str, Any]]:
    """Chunk dicts of an `openai.Stream`, closing the HTTP response however iteration ends."""
    try:
        for chunk in stream:
            yield chunk.model_dump()
    finally:
        stream.close()
