"""Response shapes of the OpenAI-compatible API (docs/openai-api.md), as `response_model`s, and
the conversions from what the services return (engine `SampleResult`s, `ServingService` model
listings and warmup states) to them.

The shapes are OpenAI's, as the `openai` SDK reads them. Keys OpenAI omits stay omitted (a
message's `tool_calls` when there is none: routes use `response_model_exclude_unset`), keys it
sends as null stay null, and `extra="allow"` keeps any key a route adds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from frontier_signal.engine.types import SampledSequence, SampleResult
from frontier_signal.server.schemas.openai import chat_logprobs, model_card, token_text, usage
from frontier_signal.service.chat import ChatShape
from frontier_signal.service.serving import ServableModel, WarmupState


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(Answer):
    name: str
    arguments: str


class ToolCall(Answer):
    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(Answer):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: list[ToolCall] | None = None  # omitted when there is none


class ChatChoice(Answer):
    index: int
    message: ChatMessage
    logprobs: dict | None
    finish_reason: str


class ChatCompletion(Answer):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(Answer):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(Answer):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str


class Completion(Answer):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage


class Model(Answer):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    parent: str | None
    root: str


class ModelList(Answer):
    object: Literal["list"]
    data: list[Model]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Warmup(Answer):
    model: str
    status: Literal["loading", "ready", "error", "not_loaded"]
    detail: str


# ----- conversions ---------------------------------------------------------------------------
def chat_completion(
    header: dict, result: SampleResult, shape: ChatShape, tokenizer, logprobs: bool, prompt: int
) -> ChatCompletion:
    """A finished chat answer; `header` holds id, created, model and system_fingerprint."""
    choices = []
    for index, sequence in enumerate(result.sequences):
        content, calls, finish = shape.answer(sequence.text, sequence.stop_reason)
        message: dict = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["tool_calls"] = [call.as_openai() for call in calls]
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": chat_logprobs(tokenizer, sequence) if logprobs else None,
                "finish_reason": finish,
            }
        )
    completion_tokens = sum(len(s.tokens) for s in result.sequences)
    return ChatCompletion.model_validate(
        header
        | {"object": "chat.completion", "choices": choices}
        | {"usage": usage(prompt, completion_tokens)}
    )


def completion_logprobs(tokenizer, tokens, logprobs, tops, offset: int) -> dict:
    """A completion choice's `logprobs` over `tokens`, text offsets counted from `offset`."""
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


def completion_choice(
    tokenizer,
    index: int,
    prompt: list[int],
    result: SampleResult,
    sequence: SampledSequence,
    echo: bool,
    logprobs: int | None,
) -> dict:
    prompt_text = tokenizer.decode(prompt, skip_special_tokens=False) if echo else ""
    wire_logprobs = None
    if logprobs is not None:
        count = len(sequence.logprobs)
        tops = sequence.top_logprobs[:count] if sequence.top_logprobs else [[]] * count
        wire_logprobs = completion_logprobs(
            tokenizer, sequence.tokens, sequence.logprobs, tops, len(prompt_text)
        )
        if echo:
            echoed = completion_logprobs(
                tokenizer,
                prompt,
                list(result.prompt_logprobs or [None] * len(prompt)),
                [None] * len(prompt),
                0,
            )
            wire_logprobs = {key: echoed[key] + wire_logprobs[key] for key in wire_logprobs}
    return {
        "index": index,
        "text": prompt_text + sequence.text,
        "logprobs": wire_logprobs,
        "finish_reason": sequence.stop_reason,
    }


def completion(
    header: dict,
    prompts: list[list[int]],
    results: list[SampleResult],
    tokenizer,
    n: int,
    echo: bool,
    logprobs: int | None,
) -> Completion:
    """Finished completions: `n` choices per prompt, in prompt order."""
    choices = [
        completion_choice(tokenizer, p * n + s, prompts[p], result, sequence, echo, logprobs)
        for p, result in enumerate(results)
        for s, sequence in enumerate(result.sequences)
    ]
    completion_tokens = sum(len(s.tokens) for r in results for s in r.sequences)
    prompt_tokens = sum(len(p) for p in prompts)
    return Completion.model_validate(
        header
        | {"object": "text_completion", "choices": choices}
        | {"usage": usage(prompt_tokens, completion_tokens)}
    )


def model(item: ServableModel) -> Model:
    return Model.model_validate(model_card(item.id, item.created, item.owned_by, item.parent))


def model_list(items: list[ServableModel], has_more: bool) -> ModelList:
    page = [model(item) for item in items]
    return ModelList(
        object="list",
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=has_more,
    )


def warmup(state: WarmupState) -> Warmup:
    return Warmup(model=state.model, status=state.status, detail=state.detail)
