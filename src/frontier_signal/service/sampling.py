"""The one sampling-request builder of every face (Signal, Tinker, OpenAI, Anthropic).

Stop policy (one rule, `engine/validation.stop_token_ids`, applied by the engine where the
model's end-of-sequence token is known): a generation ends at any of the request's stop token
ids and, unless the request sets `ignore_eos`, at the model's end-of-sequence token; it also
ends at a stop string, when its grammar completes, or after `max_tokens`. A face translates its
wire spelling into these two fields and holds no stop rule of its own: OpenAI's `ignore_eos` is
`ignore_eos`; Tinker's `stop` token ids mean "exactly those" (docs/tinker-api.md), so its schema
sets `ignore_eos` with them. The streaming bridge (service/streaming.py) leaves the same tokens
out of the text it streams, as the finished text leaves them out (backend/sampling.py).
"""

from __future__ import annotations

from frontier_signal.engine.types import SampleRequest, SamplingParams

# Used when a request sets neither max_tokens nor max_completion_tokens (less where the context
# has less room left).
DEFAULT_MAX_TOKENS = 512


def sample_requests(
    model: str,
    prompts: list[list[int]] | list[str],
    params: SamplingParams,
    *,
    num_samples: int = 1,
    prompt_logprobs: bool = False,
    checkpoint: str = "",
) -> list[SampleRequest]:
    """One `SampleRequest` per prompt: token ids, or raw text the engine tokenizes."""
    return [
        SampleRequest(model, [], params, num_samples, prompt_logprobs, checkpoint, prompt)
        if isinstance(prompt, str)
        else SampleRequest(model, prompt, params, num_samples, prompt_logprobs, checkpoint)
        for prompt in prompts
    ]
