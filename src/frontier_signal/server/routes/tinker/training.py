"""Tinker models and training: create_model, get_info, unload_model, load_weights,
forward_backward (JSON or protobuf), forward and optim_step. Each operation is checked at once
(a 4xx before any future) and then runs as a future polled through `retrieve_future`."""

from __future__ import annotations

import asyncio
import json

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from frontier_signal.server import tinker_proto
from frontier_signal.server.routes.tinker.common import (
    Tenant,
    new_router,
    settles_seq,
    start_future,
    state,
)
from frontier_signal.server.schemas import tinker_outputs as answer
from frontier_signal.server.schemas.tinker import (
    CreateModelBody,
    ForwardBackwardBody,
    ForwardBody,
    LoadWeightsBody,
    ModelBody,
    OptimStepBody,
    forward_backward_output,
    to_datums,
    to_optimizer_overrides,
)
from frontier_signal.server.schemas.tinker_responses import FutureHandle, ModelInfo
from frontier_signal.service.errors import InvalidRequest

router = new_router()


@router.post("/create_model", response_model=FutureHandle)
async def create_model(request: Request, tenant: Tenant, body: CreateModelBody):
    models = state(request).tinker_models
    models.tinker.check_base_model(body.base_model)  # an unknown model is a 404 at once
    spec = body.to_run_spec(tenant)
    run_id = await asyncio.to_thread(
        models.session_model, tenant, body.session_id, body.model_seq_id
    )
    await models.plan_create(spec)  # 4xx at once

    async def operation() -> dict:
        row = await models.create(spec, run_id)
        return {"type": "create_model", "model_id": row.id}

    handle = start_future(request, tenant, None, "create_model", body, operation)
    return FutureHandle(request_id=handle.request_id, model_id=run_id)


@router.post("/get_info", response_model=ModelInfo)
def get_info(request: Request, tenant: Tenant, body: ModelBody) -> dict:
    return answer.model_info(state(request).tinker.get_info(tenant, body.model_id))


@router.post("/unload_model", response_model=FutureHandle)
async def unload_model(request: Request, tenant: Tenant, body: ModelBody):
    service = state(request).tinker
    await asyncio.to_thread(service.model_row, tenant, body.model_id)

    async def operation() -> dict:
        await service.unload_model(tenant, body.model_id)
        return {"type": "unload_model", "model_id": body.model_id}

    return start_future(request, tenant, body.model_id, "unload_model", body, operation)


@router.post("/load_weights", response_model=FutureHandle)
async def load_weights(request: Request, tenant: Tenant, body: LoadWeightsBody):
    models = state(request).tinker_models
    plan = await asyncio.to_thread(
        models.plan_load,
        tenant,
        body.path,
        body.optimizer,
        body.model_id,
        body.session_id,
        body.model_seq_id,
        lambda source: body.to_run_spec(tenant, source),
    )

    async def operation() -> dict:
        await models.load(tenant, plan)
        return {"type": "load_weights", "path": body.path}

    scope = None if plan.create is None else plan.model_id + ":create"
    return start_future(request, tenant, plan.model_id, "load_weights", body, operation, scope)


@router.post("/forward_backward", response_model=FutureHandle)
async def forward_backward(request: Request, tenant: Tenant):
    raw = await request.body()
    if tinker_proto.is_protobuf(request.headers.get("content-type")):
        raw = tinker_proto.decompress(raw, request.headers.get("content-encoding"))
        fields = await asyncio.to_thread(tinker_proto.decode_forward_backward, raw)
    else:
        try:
            fields = json.loads(raw)
        except ValueError as exc:
            raise InvalidRequest(f"the body is not JSON: {exc}") from exc
    try:
        body = ForwardBackwardBody.model_validate(fields)
    except ValidationError as exc:  # reported like every other body (422, the field named)
        raise RequestValidationError(exc.errors(include_url=False)) from None
    batch = body.forward_backward_input
    return await _forward(request, tenant, body, batch, forward_only=body.forward_only)


@router.post("/forward", response_model=FutureHandle)
async def forward(request: Request, tenant: Tenant, body: ForwardBody):
    return await _forward(request, tenant, body, body.forward_input, forward_only=True)


async def _forward(request: Request, tenant: str, body, batch, forward_only: bool) -> FutureHandle:
    service = state(request).tinker
    with settles_seq(request, body):
        await asyncio.to_thread(service.model_row, tenant, body.model_id)
        datums, loss_fn, loss_fn_config = to_datums(batch)

    async def operation() -> dict:
        result = await service.forward_backward(
            tenant, body.model_id, datums, loss_fn, loss_fn_config, forward_only
        )
        return forward_backward_output(result)

    kind = "forward" if forward_only else "forward_backward"
    return start_future(request, tenant, body.model_id, kind, body, operation)


@router.post("/optim_step", response_model=FutureHandle)
async def optim_step(request: Request, tenant: Tenant, body: OptimStepBody):
    service = state(request).tinker
    with settles_seq(request, body):
        await asyncio.to_thread(service.model_row, tenant, body.model_id)
        overrides = to_optimizer_overrides(body)

    async def operation() -> dict:
        result = await service.optim_step(tenant, body.model_id, overrides)
        return {"metrics": answer.optim_step_metrics(result)}

    return start_future(request, tenant, body.model_id, "optim_step", body, operation)
