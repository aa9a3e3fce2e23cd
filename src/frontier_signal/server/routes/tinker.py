"""The Tinker-style API (`/api/v1`, docs/tinker-api.md): thin handlers over `TinkerService`
and `FutureService`, spoken by the hpcai SDK (tinker-wire-protocol.md).

Asynchronous operations answer `{"request_id", "model_id"}` at once and are polled through
`retrieve_future`; a failed operation answers that poll with 400 `{"detail": message}`. Results
are JSON with NaN/Infinity allowed (the clients parse them), never a 500 for a bad value.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.background import BackgroundTask

from frontier_signal.server.auth import api_key_tenant_id
from frontier_signal.server.schemas.tinker import (
    CreateModelBody,
    ForwardBackwardBody,
    ForwardBody,
    LoadWeightsBody,
    ModelBody,
    OptimStepBody,
    RetrieveFutureBody,
    SampleBody,
    SaveWeightsBody,
    TelemetryBody,
    forward_backward_output,
    input_tokens,
    sample_output,
    to_datums,
    to_optimizer_overrides,
    to_sampling_params,
)
from frontier_signal.service import files
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.futures import FutureFailed


class TinkerJSONResponse(JSONResponse):
    """JSON that keeps NaN / Infinity as the literals Python's json reads back (Starlette's
    default refuses them, which would turn a diverged loss into a 500 polled for ever)."""

    def render(self, content) -> bytes:
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


router = APIRouter(prefix="/api/v1", tags=["tinker"], default_response_class=TinkerJSONResponse)
Tenant = Annotated[str, Depends(api_key_tenant_id)]


def _state(request: Request):
    return request.app.state.frontier


def _future(
    request: Request, tenant: str, model_id: str | None, kind: str, body, operation
) -> dict:
    """Record and start an operation; answer its future handle."""
    key = request.headers.get("x-idempotency-key")
    if key is not None and not 0 < len(key) <= 190:
        raise InvalidRequest("X-Idempotency-Key must be 1 to 190 characters")
    request_id = _state(request).futures.submit(
        tenant, model_id, kind, body.model_dump(), key, operation
    )
    return {"request_id": request_id, "model_id": model_id}


# ----- discovery and stubs ---------------------------------------------------------------------
@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/get_server_capabilities")
async def get_server_capabilities(request: Request, tenant: Tenant) -> dict:
    names = _state(request).tinker.supported_models()
    return {"supported_models": [{"model_name": name} for name in names]}


@router.post("/telemetry")
async def telemetry(body: TelemetryBody) -> dict:
    # Accepted and dropped: fatal-error events carry request headers (the API key).
    return {"status": "accepted"}


# ----- models ----------------------------------------------------------------------------------
@router.post("/create_model")
async def create_model(request: Request, tenant: Tenant, body: CreateModelBody) -> dict:
    service = _state(request).tinker
    service.check_base_model(body.base_model)  # an unknown model is a 404 at once
    lora = body.lora_config

    async def operation() -> dict:
        row = await service.create_model(
            tenant,
            body.base_model,
            lora.rank,
            lora.seed,
            lora.train_attn,
            lora.train_mlp,
            lora.train_unembed,
        )
        return {"type": "create_model", "model_id": row.id}

    handle = _future(request, tenant, None, "create_model", body, operation)
    return {"request_id": handle["request_id"]}


@router.post("/get_info")
async def get_info(request: Request, tenant: Tenant, body: ModelBody) -> dict:
    return _state(request).tinker.get_info(tenant, body.model_id)


@router.post("/unload_model")
async def unload_model(request: Request, tenant: Tenant, body: ModelBody) -> dict:
    service = _state(request).tinker
    service.model_row(tenant, body.model_id)

    async def operation() -> dict:
        await service.unload_model(tenant, body.model_id)
        return {"type": "unload_model", "model_id": body.model_id}

    return _future(request, tenant, body.model_id, "unload_model", body, operation)


# ----- training --------------------------------------------------------------------------------
@router.post("/forward_backward")
async def forward_backward(request: Request, tenant: Tenant, body: ForwardBackwardBody) -> dict:
    return _forward(request, tenant, body, body.forward_backward_input, forward_only=False)


@router.post("/forward")
async def forward(request: Request, tenant: Tenant, body: ForwardBody) -> dict:
    return _forward(request, tenant, body, body.forward_input, forward_only=True)


def _forward(request: Request, tenant: str, body, batch, forward_only: bool) -> dict:
    service = _state(request).tinker
    service.model_row(tenant, body.model_id)
    datums, loss_fn, loss_fn_config = to_datums(batch)

    async def operation() -> dict:
        result = await service.forward_backward(
            tenant, body.model_id, datums, loss_fn, loss_fn_config, forward_only
        )
        return forward_backward_output(result)

    kind = "forward" if forward_only else "forward_backward"
    return _future(request, tenant, body.model_id, kind, body, operation)


@router.post("/optim_step")
async def optim_step(request: Request, tenant: Tenant, body: OptimStepBody) -> dict:
    service = _state(request).tinker
    service.model_row(tenant, body.model_id)
    overrides = to_optimizer_overrides(body.adam_params)

    async def operation() -> dict:
        return {"metrics": await service.optim_step(tenant, body.model_id, overrides)}

    return _future(request, tenant, body.model_id, "optim_step", body, operation)


# ----- checkpoints -----------------------------------------------------------------------------
@router.post("/save_weights")
async def save_weights(request: Request, tenant: Tenant, body: SaveWeightsBody) -> dict:
    return _save(request, tenant, body, "training", "save_weights")


@router.post("/save_weights_for_sampler")
async def save_weights_for_sampler(request: Request, tenant: Tenant, body: SaveWeightsBody) -> dict:
    return _save(request, tenant, body, "sampler", "save_weights_for_sampler")


def _save(request: Request, tenant: str, body: SaveWeightsBody, wire_type: str, kind: str):
    service = _state(request).tinker
    service.model_row(tenant, body.model_id)

    async def operation() -> dict:
        path = await service.save_weights(
            tenant, body.model_id, body.path, wire_type, body.overwrite
        )
        return {"type": kind, "path": path}

    return _future(request, tenant, body.model_id, kind, body, operation)


@router.post("/load_weights")
async def load_weights(request: Request, tenant: Tenant, body: LoadWeightsBody) -> dict:
    service = _state(request).tinker
    service.model_row(tenant, body.model_id)
    service.resolve(tenant, body.path)  # a bad path is a 4xx at once

    async def operation() -> dict:
        await service.load_weights(tenant, body.model_id, body.path, body.optimizer)
        return {"type": "load_weights", "path": body.path}

    return _future(request, tenant, body.model_id, "load_weights", body, operation)


# ----- sampling --------------------------------------------------------------------------------
def _sampling(request: Request, tenant: str, body: SampleBody):
    if body.topk_prompt_logprobs:
        raise InvalidRequest("topk_prompt_logprobs is not supported by this server; send 0")
    service = _state(request).tinker
    if body.model_path:
        service.resolve(tenant, body.model_path)
    elif body.base_model:
        service.check_base_model(body.base_model)
    tokens = input_tokens(body.prompt, "prompt")
    params = to_sampling_params(body.sampling_params)

    async def operation() -> dict:
        result = await service.sample(
            tenant,
            body.model_path,
            body.base_model,
            tokens,
            params,
            body.num_samples,
            body.prompt_logprobs,
        )
        return sample_output(result, body.prompt_logprobs)

    return operation


@router.post("/asample")
async def asample(request: Request, tenant: Tenant, body: SampleBody) -> dict:
    operation = _sampling(request, tenant, body)
    handle = _future(request, tenant, None, "sample", body, operation)
    ids = [f"{handle['request_id']}:{i}" for i in range(body.num_samples)]
    return {"request_id": handle["request_id"], "sample_sequence_ids": ids}


@router.post("/sample")
async def sample(request: Request, tenant: Tenant, body: SampleBody) -> dict:
    return await _sampling(request, tenant, body)()


# ----- futures ---------------------------------------------------------------------------------
@router.post("/retrieve_future")
async def retrieve_future(request: Request, tenant: Tenant, body: RetrieveFutureBody):
    try:
        return await _state(request).futures.retrieve(tenant, body.request_id)
    except FutureFailed as exc:
        return TinkerJSONResponse({"detail": exc.message}, status_code=400)


# ----- training runs and checkpoints (REST) ----------------------------------------------------
@router.get("/training_runs")
async def list_training_runs(
    request: Request,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    return _state(request).tinker.list_training_runs(tenant, limit, offset)


@router.get("/training_runs/{run_id}")
async def get_training_run(request: Request, tenant: Tenant, run_id: str) -> dict:
    return _state(request).tinker.get_training_run(tenant, run_id)


@router.get("/training_runs/{run_id}/checkpoints")
async def list_checkpoints(request: Request, tenant: Tenant, run_id: str) -> dict:
    return {"checkpoints": _state(request).tinker.list_checkpoints(tenant, run_id)}


@router.get("/models/{run_id}/checkpoints")
async def list_model_checkpoints(request: Request, tenant: Tenant, run_id: str) -> dict:
    return {"checkpoints": _state(request).tinker.list_checkpoints(tenant, run_id)}


@router.get("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/archive")
async def checkpoint_archive(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    checkpoint = _state(request).tinker.find_checkpoint(tenant, run_id, checkpoint_id)
    arcname = checkpoint.name.replace("/", "_")
    path = await asyncio.to_thread(files.archive, Path(checkpoint.path), arcname)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"{run_id}-{arcname}.tar.gz",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


@router.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}")
async def delete_checkpoint(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    _state(request).tinker.delete_checkpoint(tenant, run_id, checkpoint_id)
    return Response(status_code=204)
