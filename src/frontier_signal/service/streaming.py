"""The one streaming bridge of every face (Signal `sample/stream`, OpenAI and Anthropic
`stream: true`): tokens the engine thread hands to a callback become an async iterator on the
event loop, each with the text of its row so far.

The text of a row is decoded incrementally (`IncrementalText`) and leaves out the tokens that
end it, the same stop tokens the request builder gave the engine (service/sampling.py), so the
streamed text grows into the finished text. `settled` is the part of a growing text no marker
(a stop string, a tool-call tag) can still claim. It knows nothing about HTTP or SSE framing
(server/streaming.py frames the events).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from frontier_signal.engine.types import SamplingParams
from frontier_signal.engine.validation import stop_token_ids


class IncrementalText:
    """A growing generation's text, decoding only its last few tokens per new token (a token's
    text can depend on its neighbours, and a multi-byte character may span tokens: text is only
    taken once it no longer ends in an incomplete character)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""
        self._prefix = 0  # tokens[_prefix:_read] decode to the tail of `text` already taken
        self._read = 0

    def add(self, token: int) -> None:
        self.tokens.append(token)
        decode = self.tokenizer.decode
        before = decode(self.tokens[self._prefix : self._read], skip_special_tokens=False)
        after = decode(self.tokens[self._prefix :], skip_special_tokens=False)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.tokens)


def settled(text: str, markers: tuple[str, ...]) -> str:
    """The part of a growing text no marker (a stop string, a tool-call tag) can still claim:
    cut at the first marker, and hold back a tail that may grow into one."""
    for marker in markers:
        if marker in text:
            text = text[: text.index(marker)]
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                text = text[:-size]
                break
    return text


class TokenBridge:
    """Engine-thread tokens → `(row, token, logprob, text so far)` on the event loop.

    Make it on the event loop, pass `on_token` to the generation, `start()` the generation's
    coroutine, then iterate `tokens()` and `await result()`. Rows are `prompt * n + sample`.
    `cancel()` stops a generation nobody reads any more.

    Args:
        tokenizer: the model's tokenizer (decodes the text).
        params: the request's sampling settings (their stop tokens are left out of the text).
        n: samples per prompt.
    """

    def __init__(self, tokenizer, params: SamplingParams, n: int = 1):
        self.tokenizer = tokenizer
        self.n = n
        self.stop_ids = set(stop_token_ids(params, tokenizer.eos_token_id))
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Future | None = None

    def on_token(self, prompt_index: int, sample: int, token: int, logprob: float) -> None:
        """The engine's token callback (called from the engine thread)."""
        item = (prompt_index * self.n + sample, token, logprob)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def start(self, generation: Callable[[], Awaitable[Any]]) -> None:
        """Run `generation()` in the background; `tokens()` ends when it does."""
        self._task = asyncio.ensure_future(generation())
        self._task.add_done_callback(lambda _: self._queue.put_nowait(None))

    async def tokens(self) -> AsyncIterator[tuple[int, int, float, str]]:
        texts: dict[int, IncrementalText] = {}
        while (item := await self._queue.get()) is not None:
            row, token, logprob = item
            text = texts.setdefault(row, IncrementalText(self.tokenizer))
            if token not in self.stop_ids:
                text.add(token)
            yield row, token, logprob, text.text

    async def result(self) -> Any:
        """The generation's result (its exception, if it failed)."""
        assert self._task is not None, "start() first"
        return await self._task

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
