"""`POST /v1/chat/completions`: a chat answer, or its chunks when `stream` is set. Which tools
and JSON format shape the answer is the service's rule (service/chat.py `openai_shape`); this
module turns the shaped answer into OpenAI's completion or chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from frontier_signal.engine.structured import check_grammar
from frontier_signal.server.disconnect import unless_disconnected
from frontier_signal.server.openapi import EVENT_STREAM_ALTERNATIVE
from frontier_signal.server.routes.openai.common import (
    Tenant,
    header,
    new_router,
    sse_response,
    state,
)
from frontier_signal.server.schemas.openai import ChatCompletionBody, token_text, usage
from frontier_signal.server.schemas.openai_responses import ChatCompletion, chat_completion
from frontier_signal.service.chat import ChatShape, openai_shape
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.serving import Target

router = new_router()


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    response_model_exclude_unset=True,
    responses=EVENT_STREAM_ALTERNATIVE,
)
async def chat_completions(request: Request, tenant: Tenant, body: ChatCompletionBody):
    body.check_supported()
    app = state(request)
    serving = app.serving
    target = await asyncio.to_thread(serving.resolve, tenant, body.model)
    shape, functions = openai_shape(
        body.tools, body.tool_choice, *body.response_schema(), body.messages
    )
    top = body.top()
    if body.stream and top:
        raise InvalidRequest("top_logprobs > 0 is not supported with stream; use logprobs alone")
    prompt_text = serving.chat_prompt(target, body.messages, functions) + shape.prefill
    prompt = serving.encode(target, prompt_text)
    params = body.sampling_params(body.limit(), top, shape.grammar)
    tokenizer = serving.tokenizer(target)
    if shape.grammar:
        await run_in_threadpool(check_grammar, shape.grammar, tokenizer)  # a 400 before a stream
    serving.check_room(target, [prompt], params.max_tokens)
    if body.stream:
        return _stream(request, tenant, body, target, prompt, params, shape)
    with app.requests.counted(tenant):
        [result] = await unless_disconnected(
            request, serving.generate(target, [prompt], params, body.n)
        )
    first = header("chatcmpl", body.model)
    return chat_completion(first, result, shape, tokenizer, bool(body.logprobs), len(prompt))


def _stream(request, tenant, body, target: Target, prompt, params, shape: ChatShape):
    tokenizer = state(request).serving.tokenizer(target)
    base = {"object": "chat.completion.chunk"} | header("chatcmpl", body.model)
    if body.include_usage():
        base["usage"] = None

    def chunk(index: int, delta: dict, finish=None, logprobs=None) -> dict:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return base | {"choices": [choice]}

    def entries(tokens_and_logprobs) -> dict | None:
        if not body.logprobs:
            return None
        content = []
        for token, logprob in tokens_and_logprobs:
            text = token_text(tokenizer, token)
            bytes_ = list(text.encode("utf-8"))
            content.append({"token": text, "logprob": logprob, "bytes": bytes_, "top_logprobs": []})
        return {"content": content, "refusal": None}

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
                logprobs, pending[sample] = entries(pending[sample]), []
                yield chunk(sample, {"content": delta}, logprobs=logprobs)
        [result] = await final()
        for index, sequence in enumerate(result.sequences):
            content, calls, finish = shape.answer(sequence.text, sequence.stop_reason)
            rest = (content or "")[len(sent[index]) :] if content else ""
            if rest:
                yield chunk(index, {"content": rest}, logprobs=entries(pending[index]))
            if calls:
                tool_calls = [call.as_openai() | {"index": i} for i, call in enumerate(calls)]
                yield chunk(index, {"tool_calls": tool_calls})
            yield chunk(index, {}, finish)
        if body.include_usage():
            completion = sum(len(s.tokens) for s in result.sequences)
            yield base | {"choices": [], "usage": usage(len(prompt), completion)}

    return sse_response(request, tenant, target, [prompt], params, body.n, tokenizer, events)
