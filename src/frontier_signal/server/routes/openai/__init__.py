"""The OpenAI-compatible API (docs/openai-api.md): thin handlers over `ServingService`, one
module per concept:

- `chat`: `/v1/chat/completions` (tools and JSON mode are the service's rules, service/chat.py);
- `completions`: `/v1/completions`;
- `models`: `/v1/models` and `/v1/warmup`.

Streams are server-sent events in OpenAI's chunk format ending with `data: [DONE]`. Text a stop
string, a tool call or a finished JSON object could still claim is held back until it is
settled, so the streamed deltas always add up to the non-streamed answer.
"""

from __future__ import annotations

from fastapi import APIRouter

from frontier_signal.server.routes.openai import chat, completions, models

router = APIRouter()
for _module in (chat, completions, models):
    router.include_router(_module.router)

__all__ = ["router"]
