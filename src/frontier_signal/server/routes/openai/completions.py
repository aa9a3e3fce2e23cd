"""`POST /v1/completions`: continuations of text or token prompts, or their chunks when
`stream` is set."""

from __future__ import annotations

import asyncio

from fastapi import Request

from frontier_signal.server.disconnect import unless_disconnected
from frontier_signal.server.openapi import EVENT_STREAM_ALTERNATIVE
from frontier_signal.server.routes.openai.common import (
    Tenant,
    header,
    new_router,
    sse_response,
    state,
)
from frontier_signal.server.schemas.openai import CompletionBody, usage
from frontier_signal.server.schemas.openai_responses import Completion, completion
from frontier_signal.service.chat import ChatShape
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.serving import Target

router = new_router()


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


@router.post(
    "/completions",
    response_model=Completion,
    response_model_exclude_unset=True,
    responses=EVENT_STREAM_ALTERNATIVE,
)
async def completions(request: Request, tenant: Tenant, body: CompletionBody):
    body.check_supported()
    body.best_of_check()
    app = state(request)
    serving = app.serving
    target = await asyncio.to_thread(serving.resolve, tenant, body.model)
    prompts = _prompts(serving, target, body.prompt)
    tokenizer = serving.tokenizer(target)
    params = body.sampling_params(body.max_tokens, body.logprobs or 0)
    serving.check_room(target, prompts, params.max_tokens)
    if body.stream:
        if body.echo or body.logprobs is not None:
            raise InvalidRequest("echo and logprobs are not supported with stream")
        return _stream(request, tenant, body, target, prompts, params, tokenizer)
    with app.requests.counted(tenant):
        results = await unless_disconnected(
            request, serving.generate(target, prompts, params, body.n, body.echo)
        )
    first = header("cmpl", body.model)
    return completion(first, prompts, results, tokenizer, body.n, body.echo, body.logprobs)


def _stream(request, tenant, body, target, prompts, params, tokenizer):
    base = {"object": "text_completion"} | header("cmpl", body.model)
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
            completion_tokens = sum(len(s.tokens) for r in results for s in r.sequences)
            yield base | {"choices": [], "usage": usage(sum(map(len, prompts)), completion_tokens)}

    return sse_response(request, tenant, target, prompts, params, body.n, tokenizer, events)
