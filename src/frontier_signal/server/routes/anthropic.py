"""The Anthropic-compatible API (docs/anthropic-api.md): `POST /v1/messages` and
`POST /v1/messages/count_tokens`, over the same `ServingService` as the OpenAI face: the same
models and runs (base model, run id, run@step, run:checkpoint), keys and tenant isolation.

`output_config.format` (`{"type": "json_schema", "schema"}`, Anthropic's structured outputs) is
enforced by the same grammar as the OpenAI face's `response_format`. Tool use follows the
OpenAI face's rules (service/chat.py): `tool_choice` `auto`, `any`,
`tool` and `none` are OpenAI's `auto`, `required`, a named function and `none`, with the same
grammar making forced tool input follow its `input_schema`. Streams are Anthropic's SSE events
(`message_start`, `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`,
`message_delta`, `message_stop`) through the shared bridge (server/streaming.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from frontier_signal.engine.structured import check_grammar
from frontier_signal.server.auth import bearer_or_api_key_tenant_id
from frontier_signal.server.errors import anthropic_error_body
from frontier_signal.server.openapi import ANTHROPIC_ERRORS, SSE_CONTENT, Responses
from frontier_signal.server.schemas.anthropic import (
    CountTokensBody,
    Message,
    MessagesBody,
    TokenCount,
    message,
    stop_details,
    tool_use_block,
)
from frontier_signal.server.streaming import GenerationStream
from frontier_signal.service.chat import ChatShape, anthropic_shape

router = APIRouter(prefix="/v1", tags=["anthropic"], responses=ANTHROPIC_ERRORS)
ANTHROPIC_EVENTS: Responses = {
    200: {
        "description": "A message, or its stream of Anthropic events (`event: TYPE` and "
        "`data: {json}` lines) when the body asks for `stream: true`.",
        "content": SSE_CONTENT,
    }
}
Tenant = Annotated[str, Depends(bearer_or_api_key_tenant_id)]


async def _prompt(request: Request, tenant: str, body: CountTokensBody):
    """(target, prompt tokens, shape) of a Messages body."""
    serving = request.app.state.frontier.serving
    target = await asyncio.to_thread(serving.resolve, tenant, body.model)
    schema = body.output_schema() if isinstance(body, MessagesBody) else None
    messages = body.openai_messages()
    shape, functions, continued = anthropic_shape(
        body.openai_tools(), *body.tool_mode(), schema, messages
    )
    text = serving.chat_prompt(target, messages, functions) + continued + shape.prefill
    return target, serving.encode(target, text), shape


def _content(shape: ChatShape, text: str, finish: str) -> tuple[list[dict], str, str]:
    """(content blocks, text, finish) of a finished answer."""
    content, calls, finish = shape.answer(text, finish)
    blocks = [{"type": "text", "text": content}] if content or not calls else []
    return blocks + [tool_use_block(call) for call in calls], content or "", finish


@router.post("/messages/count_tokens", response_model=TokenCount)
async def count_tokens(request: Request, tenant: Tenant, body: CountTokensBody) -> dict:
    _, prompt, _ = await _prompt(request, tenant, body)
    return {"input_tokens": len(prompt)}


@router.post("/messages", response_model=Message, responses=ANTHROPIC_EVENTS)
async def messages(request: Request, tenant: Tenant, body: MessagesBody):
    state = request.app.state.frontier
    serving = state.serving
    target, prompt, shape = await _prompt(request, tenant, body)
    params = body.sampling_params(shape.grammar)
    tokenizer = serving.tokenizer(target)
    if shape.grammar:
        await run_in_threadpool(check_grammar, shape.grammar, tokenizer)  # a 400 before any stream
    serving.check_room(target, [prompt], params.max_tokens)
    if body.stream:
        stream = GenerationStream.serving(state, tenant, target, [prompt], params, 1, tokenizer)
        events = _events(body, shape, len(prompt), tokenizer)
        return stream.response(events, _frame, _error_frame)
    with state.requests.counted(tenant):
        [result] = await serving.generate(target, [prompt], params, 1)
    [sequence] = result.sequences
    blocks, _, finish = _content(shape, sequence.text, sequence.stop_reason)
    stop = stop_details(tokenizer, sequence, params.stop_strings, finish)
    usage = {"input_tokens": len(prompt), "output_tokens": len(sequence.tokens)}
    return message(body.model, blocks, stop, usage)


# ----- streaming -----------------------------------------------------------------------------
def _frame(payload: dict) -> str:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"


def _error_frame(status: int, type_: str, text: str) -> str:
    return _frame(anthropic_error_body(status, text))


def _events(body: MessagesBody, shape: ChatShape, prompt_tokens: int, tokenizer):
    stops = tuple(body.stop_sequences or ())

    def delta(index: int, text: str) -> dict:
        kind = {"type": "text_delta", "text": text}
        return {"type": "content_block_delta", "index": index, "delta": kind}

    def start(index: int, block: dict) -> dict:
        return {"type": "content_block_start", "index": index, "content_block": block}

    async def events(tokens, final) -> AsyncIterator[dict]:
        usage = {"input_tokens": prompt_tokens, "output_tokens": 0}
        yield {"type": "message_start", "message": message(body.model, [], (None, None), usage)}
        yield {"type": "ping"}
        sent, opened = "", False
        async for _row, _token, _logprob, text in tokens():
            visible = shape.visible(text, stops)
            if visible.startswith(sent) and len(visible) > len(sent):
                if not opened:
                    opened = True
                    yield start(0, {"type": "text", "text": ""})
                yield delta(0, visible[len(sent) :])
                sent = visible
        [result] = await final()
        [sequence] = result.sequences
        blocks, content, finish = _content(shape, sequence.text, sequence.stop_reason)
        rest = content[len(sent) :] if content.startswith(sent) else ""
        index = 0
        if blocks and blocks[0]["type"] == "text" and (rest or not opened):
            if not opened:
                opened = True
                yield start(0, {"type": "text", "text": ""})
            if rest:
                yield delta(0, rest)
        if opened:
            yield {"type": "content_block_stop", "index": 0}
            index = 1
        for block in blocks:
            if block["type"] != "tool_use":
                continue
            yield start(index, block | {"input": {}})
            partial = json.dumps(block["input"], ensure_ascii=False)
            json_delta = {"type": "input_json_delta", "partial_json": partial}
            yield {"type": "content_block_delta", "index": index, "delta": json_delta}
            yield {"type": "content_block_stop", "index": index}
            index += 1
        stop_reason, stop_sequence = stop_details(tokenizer, sequence, stops, finish)
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": len(sequence.tokens)},
        }
        yield {"type": "message_stop"}

    return events
