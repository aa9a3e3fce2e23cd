"""The OpenAI-compatible API (docs/openai-api.md): `/v1/chat/completions`, `/v1/completions`,
`/v1/models`, `/v1/warmup`, over `ServingService`.

Streams are server-sent events in OpenAI's chunk format ending with `data: [DONE]`. Text a stop
string, a tool call or a finished JSON object could still claim is held back until it is
settled, so the streamed deltas always add up to the non-streamed answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from frontier_signal import __version__
from frontier_signal.engine.structured import check_grammar
from frontier_signal.engine.types import SampledSequence
from frontier_signal.server.auth import tenant_id
from frontier_signal.server.chat_shapes import ChatShape, json_shape, tool_shape
from frontier_signal.server.openapi import OPENAI_ERRORS, json_or_events
from frontier_signal.server.schemas.openai import (
    ChatCompletionBody,
    CompletionBody,
    WarmupBody,
    chat_logprobs,
    model_card,
    new_id,
    now,
    token_text,
    usage,
)
from frontier_signal.server.streaming import GenerationStream, sse
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.serving import Target

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERRORS)
Tenant = Annotated[str, Depends(tenant_id)]
FINGERPRINT = f"fs-{__version__}"


def _state(request: Request):
    return request.app.state.frontier


# ----- chat: how one choice's text becomes an answer ---------------------------------------
def _tool_mode(choice) -> tuple[str, str]:
    """OpenAI's `tool_choice` as (mode, function name) for server/chat_shapes.py."""
    if choice in (None, "auto", "none", "required"):
        return choice or "auto", ""
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return "named", choice["function"].get("name")
    raise InvalidRequest(
        "tool_choice must be 'auto', 'none', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}"
    )


def _chat_shape(body: ChatCompletionBody) -> tuple[ChatShape, list[dict] | None]:
    """The shape and the functions to render, validated (400 on bad tools or formats)."""
    shape, functions = ChatShape(), None
    if body.tools:
        shape, functions = tool_shape(body.tools, *_tool_mode(body.tool_choice))
    elif body.tool_choice not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice needs tools")
    fmt, schema = body.response_schema()
    if fmt == "text":
        return shape, functions
    if shape.prefill:
        raise InvalidRequest(f"response_format {fmt} cannot be combined with a forced tool_choice")
    if fmt == "json_object" and not any(
        "json" in json.dumps(m.get("content", "")).lower() for m in body.messages
    ):
        raise InvalidRequest(
            "response_format json_object: the messages must ask for JSON (say 'JSON' in "
            "a system or user message), as with OpenAI"
        )
    return json_shape(schema), functions


def _message(content: str | None, calls: list) -> dict:
    message = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = [call.as_openai() for call in calls]
    return message


@router.post("/chat/completions", responses=json_or_events("A chat completion, or its chunks"))
async def chat_completions(request: Request, tenant: Tenant, body: ChatCompletionBody):
    body.check_supported()
    state = _state(request)
    serving = state.serving
    target = serving.resolve(tenant, body.model)
    shape, functions = _chat_shape(body)
    top = body.top()
    if body.stream and top:
        raise InvalidRequest("top_logprobs > 0 is not supported with stream; use logprobs alone")
    prompt_text = serving.chat_prompt(target, body.messages, functions) + shape.prefill
    prompt = serving.encode(target, prompt_text)
    params = body.sampling_params(body.limit(), top, shape.grammar)
    if shape.grammar:
        await run_in_threadpool(
            check_grammar, shape.grammar, serving.tokenizer(target)
        )  # a 400 before any stream
    serving.check_room(target, [prompt], params.max_tokens)
    if body.stream:
        return _stream(request, tenant, body, target, prompt, params, shape)
    with state.requests.counted(tenant):
        [result] = await serving.generate(
            target, [prompt], params, body.n, ignore_eos=body.ignore_eos
        )
    tokenizer = serving.tokenizer(target)
    choices = []
    for index, sequence in enumerate(result.sequences):
        content, calls, finish = shape.answer(sequence.text, sequence.stop_reason)
        choices.append(
            {
                "index": index,
                "message": _message(content, calls),
                "logprobs": chat_logprobs(tokenizer, sequence) if body.logprobs else None,
                "finish_reason": finish,
            }
        )
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": body.model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": usage(len(prompt), sum(len(s.tokens) for s in result.sequences)),
    }


def _stream(request, tenant, body, target: Target, prompt, params, shape: ChatShape):
    serving = _state(request).serving
    tokenizer = serving.tokenizer(target)
    base = {
        "id": new_id("chatcmpl"),
        "object": "chat.completion.chunk",
        "created": now(),
        "model": body.model,
        "system_fingerprint": FINGERPRINT,
    }
    if body.include_usage():
        base["usage"] = None

    def chunk(index: int, delta: dict, finish=None, logprobs=None) -> dict:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return base | {"choices": [choice]}

    def entries(tokens_and_logprobs) -> dict:
        return {
            "content": [
                {
                    "token": (text := token_text(tokenizer, token)),
                    "logprob": logprob,
                    "bytes": list(text.encode("utf-8")),
                    "top_logprobs": [],
                }
                for token, logprob in tokens_and_logprobs
            ],
            "refusal": None,
        }

    async def events(tokens: Callable, final) -> AsyncIterator[dict]:
        for index in range(body.n):
            yield chunk(index, {"role": "assistant", "content": ""})
        sent = [""] * body.n
        pending: list[list] = [[] for _ in range(body.n)]
        async for sample, token, logprob, text in tokens():
            pending[sample].append((token, logprob))
            visible = shape.visible(text, params.stop_strings)
            if visible.startswith(sent[sample]) and len(visible) > len(sent[sample]):
                delta, sent[sample] = visible[len(sent[sample]) :], visible
                logprobs = entries(pending[sample]) if body.logprobs else None
                pending[sample] = []
                yield chunk(sample, {"content": delta}, logprobs=logprobs)
        [result] = await final()
        for index, sequence in enumerate(result.sequences):
            content, calls, finish = shape.answer(sequence.text, sequence.stop_reason)
            rest = (content or "")[len(sent[index]) :] if content else ""
            if rest:
                logprobs = entries(pending[index]) if body.logprobs else None
                yield chunk(index, {"content": rest}, logprobs=logprobs)
            if calls:
                delta = {
                    "tool_calls": [call.as_openai() | {"index": i} for i, call in enumerate(calls)]
                }
                yield chunk(index, delta)
            yield chunk(index, {}, finish)
        if body.include_usage():
            completion = sum(len(s.tokens) for s in result.sequences)
            yield base | {"choices": [], "usage": usage(len(prompt), completion)}

    return _sse_response(request, tenant, target, [prompt], params, body, tokenizer, events)


def _sse_response(request, tenant, target, prompts, params, body, tokenizer, events):
    """Run the generation in the background and stream what `events` makes of its tokens."""
    generation = GenerationStream(
        _state(request), tenant, target, prompts, params, body.n, body.ignore_eos, tokenizer
    )
    return generation.response(events, sse, _error_event, "data: [DONE]\n\n")


def _error_event(status: int, type_: str, message: str) -> str:
    return sse({"error": {"message": message, "type": type_, "code": status, "param": None}})


# ----- completions ---------------------------------------------------------------------------
def _prompts(serving, target: Target, prompt) -> list[list[int]]:
    """The prompt field (a string, strings, token ids or lists of them) as token lists."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise InvalidRequest("prompt is empty: send text or token ids")
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    out = []
    for index, item in enumerate(prompt):
        tokens = serving.encode(target, item) if isinstance(item, str) else list(item)
        if not tokens:
            raise InvalidRequest(f"prompt[{index}] is empty: send text to continue")
        out.append(tokens)
    if len(out) > 64:
        raise InvalidRequest(f"prompt takes up to 64 prompts, got {len(out)}")
    return out


def _completion_logprobs(tokenizer, tokens, logprobs, tops, offset: int) -> dict:
    texts = [token_text(tokenizer, t) for t in tokens]
    offsets, position = [], offset
    for text in texts:
        offsets.append(position)
        position += len(text)
    return {
        "tokens": texts,
        "token_logprobs": logprobs,
        "top_logprobs": [
            {token_text(tokenizer, t): lp for t, lp in top} if top is not None else None
            for top in tops
        ],
        "text_offset": offsets,
    }


def _completion_choice(tokenizer, body, index, prompt, result, sequence: SampledSequence) -> dict:
    prompt_text = tokenizer.decode(prompt, skip_special_tokens=False) if body.echo else ""
    logprobs = None
    if body.logprobs is not None:
        count = len(sequence.logprobs)
        tops = sequence.top_logprobs[:count] if sequence.top_logprobs else [[]] * count
        logprobs = _completion_logprobs(
            tokenizer, sequence.tokens, sequence.logprobs, tops, len(prompt_text)
        )
        if body.echo:
            echoed = _completion_logprobs(
                tokenizer,
                prompt,
                list(result.prompt_logprobs or [None] * len(prompt)),
                [None] * len(prompt),
                0,
            )
            logprobs = {key: echoed[key] + logprobs[key] for key in logprobs}
    return {
        "index": index,
        "text": prompt_text + sequence.text,
        "logprobs": logprobs,
        "finish_reason": sequence.stop_reason,
    }


@router.post("/completions", responses=json_or_events("A completion, or its chunks"))
async def completions(request: Request, tenant: Tenant, body: CompletionBody):
    body.check_supported()
    body.best_of_check()
    state = _state(request)
    serving = state.serving
    target = serving.resolve(tenant, body.model)
    prompts = _prompts(serving, target, body.prompt)
    tokenizer = serving.tokenizer(target)
    params = body.sampling_params(body.max_tokens, body.logprobs or 0)
    serving.check_room(target, prompts, params.max_tokens)
    if body.stream:
        if body.echo or body.logprobs is not None:
            raise InvalidRequest("echo and logprobs are not supported with stream")
        return _stream_completion(request, tenant, body, target, prompts, params, tokenizer)
    with state.requests.counted(tenant):
        results = await serving.generate(
            target, prompts, params, body.n, body.echo, ignore_eos=body.ignore_eos
        )
    choices = [
        _completion_choice(tokenizer, body, p * body.n + s, prompts[p], result, sequence)
        for p, result in enumerate(results)
        for s, sequence in enumerate(result.sequences)
    ]
    completion = sum(len(s.tokens) for r in results for s in r.sequences)
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": now(),
        "model": body.model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": usage(sum(len(p) for p in prompts), completion),
    }


def _stream_completion(request, tenant, body, target, prompts, params, tokenizer):
    base = {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": now(),
        "model": body.model,
        "system_fingerprint": FINGERPRINT,
    }
    if body.include_usage():
        base["usage"] = None
    plain = ChatShape()

    def chunk(index: int, text: str, finish=None) -> dict:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
        return base | {"choices": [choice]}

    async def events(tokens, final):
        sent: dict[int, str] = {}
        async for index, _token, _logprob, text in tokens():
            visible = plain.visible(text, params.stop_strings)
            done = sent.get(index, "")
            if visible.startswith(done) and len(visible) > len(done):
                sent[index] = visible
                yield chunk(index, visible[len(done) :])
        results = await final()
        for p, result in enumerate(results):
            for s, sequence in enumerate(result.sequences):
                index = p * body.n + s
                rest = sequence.text[len(sent.get(index, "")) :]
                if rest:
                    yield chunk(index, rest)
                yield chunk(index, "", sequence.stop_reason)
        if body.include_usage():
            completion = sum(len(s.tokens) for r in results for s in r.sequences)
            yield base | {"choices": [], "usage": usage(sum(map(len, prompts)), completion)}

    return _sse_response(request, tenant, target, prompts, params, body, tokenizer, events)


# ----- models and warmup ---------------------------------------------------------------------
def _cards(state, tenant: str) -> list[dict]:
    return [model_card(*item) for item in state.serving.servable(tenant)]


@router.get("/models")
async def list_models(
    request: Request,
    tenant: Tenant,
    after: str | None = Query(None, description="List the models after this id."),
    limit: int | None = Query(None, ge=1, le=1000, description="At most this many (1-1000)."),
) -> dict:
    """Every name this key can serve; with `after` / `limit`, one page of them."""
    serving = _state(request).serving
    items, has_more = await asyncio.to_thread(serving.models_page, tenant, after, limit)
    page = [model_card(*item) for item in items]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }


@router.get("/models/{model:path}")
async def get_model(request: Request, tenant: Tenant, model: str) -> dict:
    state = _state(request)
    target = state.serving.resolve(tenant, model)  # a 404 if this key cannot serve it
    for card in await asyncio.to_thread(_cards, state, tenant):
        if card["id"] == model:
            return card
    owner = tenant if target.run is not None else "frontier-signal"
    created = target.run.created_at if target.run is not None else state.started_at
    return model_card(model, created, owner, target.base_model)


@router.post("/warmup")
async def warmup(request: Request, tenant: Tenant, body: WarmupBody) -> dict:
    return await _state(request).serving.warmup(tenant, body.model)


@router.get("/warmup/{model:path}")
async def warmup_status(request: Request, tenant: Tenant, model: str) -> dict:
    return _state(request).serving.warmup_status(tenant, model)
