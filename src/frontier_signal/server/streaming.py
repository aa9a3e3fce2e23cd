"""What the streaming faces (Signal `sample/stream`, OpenAI and Anthropic `stream: true`) need: a
generation's text grown token by token without re-decoding it all, the part of it that is
settled, and `GenerationStream`, the bridge from the scheduler's token callback to an SSE
response whose framing (OpenAI chunks, Anthropic events) each face supplies."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from frontier_signal.service.errors import describe

logger = logging.getLogger(__name__)


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


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class GenerationStream:
    """One generation run in the background, its tokens handed to a face's event builder.

    `events(tokens, final)` is the face's async generator of payloads: `tokens()` yields
    `(row, token, logprob, text so far)` as the engine makes them (row = prompt * n + sample),
    and `await final()` gives the finished results.
    """

    def __init__(self, state, tenant, target, prompts, params, n, ignore_eos, tokenizer):
        self.state, self.tenant, self.target = state, tenant, target
        self.prompts, self.params, self.n, self.ignore_eos = prompts, params, n, ignore_eos
        self.tokenizer = tokenizer

    def response(
        self,
        events: Callable,
        frame: Callable[[dict], str],
        error_frame: Callable[[int, str, str], str],
        end: str = "",
    ) -> StreamingResponse:
        """Start generating (a 429 here, before the stream, when the tenant is over its limit)
        and answer with the framed events; an error after the start is reported in-stream."""
        state, n = self.state, self.n
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def on_token(prompt_index: int, sample: int, token: int, logprob: float) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (prompt_index * n + sample, token, logprob))

        async def counted():
            with state.requests.counted(self.tenant):
                return await state.serving.generate(
                    self.target, self.prompts, self.params, n, False, on_token, self.ignore_eos
                )

        state.requests.admit(self.tenant)
        task = asyncio.ensure_future(counted())
        task.add_done_callback(lambda _: queue.put_nowait(None))
        stop_ids = {self.tokenizer.eos_token_id}

        async def tokens() -> AsyncIterator[tuple[int, int, float, str]]:
            texts: dict[int, IncrementalText] = {}
            while (item := await queue.get()) is not None:
                index, token, logprob = item
                text = texts.setdefault(index, IncrementalText(self.tokenizer))
                if token not in stop_ids:
                    text.add(token)
                yield index, token, logprob, text.text

        async def final():
            return task.result()

        async def body():
            try:
                async for payload in events(tokens, final):
                    yield frame(payload)
            except Exception as exc:  # noqa: BLE001 - the status line is gone: report in-stream
                status, type_, message, _ = describe(exc)
                if status >= 500:
                    logger.error("stream failed", exc_info=exc)
                yield error_frame(status, type_, message)
            finally:
                if not task.done():
                    task.cancel()
            if end:
                yield end

        return StreamingResponse(body(), media_type="text/event-stream")
