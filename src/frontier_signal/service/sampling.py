"""The one sampling-request builder of every face (Signal, Tinker, OpenAI, Anthropic) and its one
stop policy.

Stop policy: a generation ends at any of the request's stop token ids and, unless the request
sets `ignore_eos`, at the model's end-of-sequence token; it also ends at a stop string, when its
grammar completes, or after `max_tokens`. A face translates its wire spelling into these two
fields and holds no stop rule of its own: OpenAI's `ignore_eos` is `ignore_eos`; Tinker's
`stop` token ids mean "exactly those" (docs/tinker-api.md), so its schema sets `ignore_eos`
with them. The streaming bridge (service/streaming.py) leaves the same tokens out of the text
it streams, as the finished text leaves them out (backend/sampling.py).

Runs in the engine thread (inside a scheduler `prepare`), so it only reads what it is given.
"""

from __future__ import annotations

from dataclasses import replace

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import SampleRequest, SamplingParams

# Used when a request sets neither max_tokens nor max_completion_tokens (less where the context
# has less room left).
DEFAULT_MAX_TOKENS = 512


def stop_token_ids(params: SamplingParams, eos_token_id: int | None) -> tuple[int, ...]:
    """The token ids that end a generation of `params` (the stop policy above)."""
    stops = tuple(params.stop_token_ids)
    if params.ignore_eos or eos_token_id is None or eos_token_id in stops:
        return stops
    return (*stops, eos_token_id)


def tokens_to_generate(context: int, prompt_tokens: int, max_tokens: int) -> int:
    """`max_tokens`, or with 0 as many as fit up to the default.

    Raises:
        InvalidInputError: the prompt plus `max_tokens` do not fit the context.
    """
    room = context - prompt_tokens
    wanted = max_tokens or min(DEFAULT_MAX_TOKENS, room)
    if room < 1 or wanted > room:
        raise InvalidInputError(
            f"this model's context is {context} tokens: the prompt has {prompt_tokens} and "
            f"max_tokens asks for {max(wanted, 1)}; shorten the prompt or lower max_tokens"
        )
    return wanted


def sample_requests(
    model: str,
    prompts: list[list[int]] | list[str],
    params: SamplingParams,
    eos_token_id: int | None,
    *,
    context: int | None = None,
    num_samples: int = 1,
    prompt_logprobs: bool = False,
    checkpoint: str = "",
) -> list[SampleRequest]:
    """One `SampleRequest` per prompt (token ids, or raw text the engine tokenizes), with the
    stop policy applied. With `context`, a token prompt's `max_tokens` is checked against it
    (and 0 becomes "as many as fit, up to the default").

    Raises:
        InvalidInputError: a token prompt plus `max_tokens` do not fit `context`.
    """
    final = replace(params, stop_token_ids=stop_token_ids(params, eos_token_id))
    requests = []
    for prompt in prompts:
        if isinstance(prompt, str):
            requests.append(
                SampleRequest(model, [], final, num_samples, prompt_logprobs, checkpoint, prompt)
            )
            continue
        wanted = final.max_tokens
        if context is not None:
            wanted = tokens_to_generate(context, len(prompt), final.max_tokens)
        request_params = replace(final, max_tokens=wanted)
        requests.append(
            SampleRequest(model, prompt, request_params, num_samples, prompt_logprobs, checkpoint)
        )
    return requests
