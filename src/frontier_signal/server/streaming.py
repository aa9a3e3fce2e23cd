"""Server-sent events over the one streaming bridge (service/streaming.py): `sse` frames a
payload, and `GenerationStream` runs a generation in the background and answers a
`StreamingResponse` of what a face's event builder makes of its tokens (OpenAI chunks, Anthropic
events, Signal token events). The bridge, the stop policy and the text are the service's; only
the framing and the in-stream error are decided here."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse

from frontier_signal.engine.types import SamplingParams, TokenCallback
from frontier_signal.service.errors import describe
from frontier_signal.service.streaming import TokenBridge

logger = logging.getLogger(__name__)


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class GenerationStream:
    """One generation run in the background, its tokens handed to a face's event builder.

    `generate(on_token)` starts the face's generation (`ServingService.generate` or
    `RunService.sample_requests`) with the bridge's token callback. `events(tokens, final)` is
    the face's async generator of payloads: `tokens()` yields `(row, token, logprob, text so
    far)` as the engine makes them (row = prompt * n + sample), and `await final()` gives the
    generation's result.
    """

    def __init__(
        self,
        state,
        tenant: str,
        tokenizer,
        params: SamplingParams,
        n: int,
        generate: Callable[[TokenCallback], Awaitable],
    ):
        self.state, self.tenant = state, tenant
        self.tokenizer, self.params, self.n = tokenizer, params, n
        self.generate = generate

    def response(
        self,
        events: Callable,
        frame: Callable[[dict], str],
        error_frame: Callable[[int, str, str], str],
        end: str = "",
    ) -> StreamingResponse:
        """Start generating (a 429 here, before the stream, when the tenant is over its limit)
        and answer with the framed events; an error after the start is reported in-stream."""
        state = self.state
        bridge = TokenBridge(self.tokenizer, self.params, self.n)

        async def counted():
            with state.requests.counted(self.tenant):
                return await self.generate(bridge.on_token)

        state.requests.admit(self.tenant)
        bridge.start(counted)

        async def body() -> AsyncIterator[str]:
            try:
                async for payload in events(bridge.tokens, bridge.result):
                    yield frame(payload)
            except Exception as exc:  # noqa: BLE001 - the status line is gone: report in-stream
                status, type_, message, _ = describe(exc)
                if status >= 500:
                    logger.error("stream failed", exc_info=exc)
                yield error_frame(status, type_, message)
            finally:  # the client left (or the stream ended): stop generating for nobody
                bridge.cancel()
            if end:
                yield end

        return StreamingResponse(body(), media_type="text/event-stream")

    @classmethod
    def serving(cls, state, tenant, target, prompts, params, n, tokenizer) -> GenerationStream:
        """A stream of `ServingService.generate` (the OpenAI and Anthropic faces)."""

        def generate(on_token: TokenCallback):
            return state.serving.generate(target, prompts, params, n, False, on_token)

        return cls(state, tenant, tokenizer, params, n, generate)
