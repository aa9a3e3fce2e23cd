"""Wire schemas of the OpenAI-compatible API (docs/openai-api.md): bodies in, OpenAI's exact
response and chunk shapes out.

Fields OpenAI clients send that do not change the output here (`user`, `metadata`, `store`,
`parallel_tool_calls`, `service_tier`) are accepted and ignored; fields that would change the
output and are not supported (`suffix`, audio, images) are a clear 400. `min_p` and `top_k`
are vLLM's extensions.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import SampledSequence, SamplingParams
from frontier_signal.engine.validation import logit_bias_from_wire
from frontier_signal.server.schemas.rules import WireBody
from frontier_signal.service.errors import InvalidRequest

MAX_N = 16


class Body(WireBody):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)  # vLLM's extension
    max_tokens: int | None = Field(None, ge=1, le=32768)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**53 - 1)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0)  # vLLM's extension
    min_p: float = Field(0.0, ge=0.0, le=1.0)  # vLLM's extension
    ignore_eos: bool = False  # vLLM's extension: always generate max_tokens (benchmarks)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ()

    def check_supported(self) -> None:
        extra = self.model_extra or {}
        for name in self.UNSUPPORTED:
            if name in extra and extra[name] not in (None, False, [], {}):
                raise InvalidRequest(f"{name} is not supported by this server; leave it out")

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise InvalidRequest(f"stop takes up to 4 sequences, got {len(stops)}")
        if any(not s for s in stops):
            raise InvalidRequest("stop sequences must be non-empty strings")
        return tuple(stops)

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def bias(self) -> tuple[tuple[int, float], ...]:
        """`logit_bias` as (token id, bias) pairs (400 on a bad key or value)."""
        try:
            return logit_bias_from_wire(self.logit_bias)
        except InvalidInputError as exc:
            raise InvalidRequest(str(exc)) from None

    def sampling_params(
        self, max_tokens: int | None, top_logprobs: int, grammar: str = ""
    ) -> SamplingParams:
        """The engine's settings; `max_tokens` 0 means "as many as fit, up to the default"."""
        return SamplingParams(
            max_tokens=max_tokens or 0,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=-1 if self.top_k is None or self.top_k == 0 else self.top_k,
            stop_strings=self.stops(),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            top_logprobs=top_logprobs,
            min_p=self.min_p,
            logit_bias=self.bias(),
            grammar=grammar,
            ignore_eos=self.ignore_eos,
        )


class ChatCompletionBody(Body):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    UNSUPPORTED: ClassVar[tuple[str, ...]] = (
        "functions",
        "function_call",
        "audio",
        "prediction",
        "web_search_options",
    )

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def response_schema(self) -> tuple[str, dict | None]:
        """(`text` | `json_object` | `json_schema`, the schema for `json_schema`).

        Raises:
            InvalidRequest: an unknown type, or `json_schema` without a usable schema object.
        """
        fmt = self.response_format or {}
        kind = fmt.get("type", "text")
        if kind in ("text", "json_object"):
            return kind, None
        if kind != "json_schema":
            raise InvalidRequest(
                f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}"
            )
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest(
                "response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}"
            )
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema.schema must be a JSON schema object")
        return kind, schema

    def top(self) -> int:
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else 0


class CompletionBody(Body):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    max_tokens: int | None = Field(16, ge=1, le=32768)  # OpenAI's default for completions

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ("suffix",)

    def best_of_check(self) -> None:
        best_of = (self.model_extra or {}).get("best_of")
        if best_of not in (None, self.n):
            raise InvalidRequest("best_of is not supported by this server; use n")


class WarmupBody(WireBody):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)


# ----- responses -----------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def token_text(tokenizer, token: int) -> str:
    return tokenizer.decode([token])


def chat_logprobs(tokenizer, sequence: SampledSequence, count: int | None = None) -> dict:
    """`choices[].logprobs` of a chat completion: `{"content": [{token, logprob, bytes,
    top_logprobs}]}` over the first `count` generated tokens (all by default)."""
    content = []
    tokens = sequence.tokens if count is None else sequence.tokens[:count]
    for index, token in enumerate(tokens):
        text = token_text(tokenizer, token)
        alternatives = sequence.top_logprobs[index] if sequence.top_logprobs else []
        content.append(
            {
                "token": text,
                "logprob": sequence.logprobs[index],
                "bytes": list(text.encode("utf-8")),
                "top_logprobs": [
                    {
                        "token": (alt := token_text(tokenizer, alt_token)),
                        "logprob": alt_logprob,
                        "bytes": list(alt.encode("utf-8")),
                    }
                    for alt_token, alt_logprob in alternatives
                ],
            }
        )
    return {"content": content, "refusal": None}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def model_card(model_id: str, created: float, owned_by: str, parent: str | None) -> dict:
    return {
        "id": model_id,
        "object": "model",
        "created": int(created),
        "owned_by": owned_by,
        "parent": parent,
        "root": parent or model_id,
    }


FinishReason = Literal["stop", "length", "tool_calls"]
