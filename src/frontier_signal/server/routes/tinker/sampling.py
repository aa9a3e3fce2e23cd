"""Tinker sampling: `asample` (a future, polled through `retrieve_future`) and `sample`
(synchronous, counted in flight like every other engine route). Which weights a request samples
(a sampling session's pinned checkpoint, a path, a base model) is the service's rule
(`TinkerModels.sample_source`)."""

from __future__ import annotations

import asyncio

from fastapi import Request

from frontier_signal.server.routes.tinker.common import Tenant, new_router, start_future, state
from frontier_signal.server.schemas.tinker import (
    SampleBody,
    check_sample_supported,
    input_tokens,
    sample_output,
    to_sampling_params,
)
from frontier_signal.server.schemas.tinker_responses import SampleHandle, SampleResponse

router = new_router()


async def _sampling(request: Request, tenant: str, body: SampleBody):
    """Check the request at once (4xx); the operation that samples it."""
    check_sample_supported(body)
    app = state(request)
    model_path, base_model = await asyncio.to_thread(
        app.tinker_models.sample_source,
        tenant,
        body.sampling_session_id,
        body.model_path,
        body.base_model,
    )
    want_prompt_logprobs = bool(body.prompt_logprobs)
    tokens = input_tokens(body.prompt, "prompt")
    params = to_sampling_params(body.sampling_params)

    async def operation() -> dict:
        result = await app.tinker.sample(
            tenant, model_path, base_model, tokens, params, body.num_samples, want_prompt_logprobs
        )
        return sample_output(result, want_prompt_logprobs)

    return operation


@router.post("/asample", response_model=SampleHandle)
async def asample(request: Request, tenant: Tenant, body: SampleBody):
    operation = await _sampling(request, tenant, body)
    handle = start_future(
        request, tenant, None, "sample", body, operation, body.sampling_session_id
    )
    ids = [f"{handle.request_id}:{i}" for i in range(body.num_samples)]
    return SampleHandle(request_id=handle.request_id, sample_sequence_ids=ids)


@router.post("/sample", response_model=SampleResponse)
async def sample(request: Request, tenant: Tenant, body: SampleBody) -> dict:
    operation = await _sampling(request, tenant, body)
    with state(request).requests.counted(tenant):  # in flight, like every other route
        return await operation()
