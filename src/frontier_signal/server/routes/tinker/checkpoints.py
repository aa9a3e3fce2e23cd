"""Tinker checkpoints: saving weights (training state, sampler weights, external PEFT files) as
futures, and the REST side: training runs, listings, the `.tar.gz` archive, signed per-file
download URLs, publish / unpublish, TTL and delete."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from frontier_signal.server.openapi import BINARY, GZIP, NO_CONTENT
from frontier_signal.server.routes.tinker.common import (
    Tenant,
    new_router,
    scheme,
    start_future,
    state,
)
from frontier_signal.server.schemas import tinker_outputs as answer
from frontier_signal.server.schemas.rules import INT_LIMIT
from frontier_signal.server.schemas.tinker import (
    SaveWeightsBody,
    SaveWeightsExternalBody,
    TtlBody,
)
from frontier_signal.server.schemas.tinker_responses import (
    CheckpointList,
    FutureHandle,
    SignedUrls,
    TrainingRun,
    TrainingRunList,
)
from frontier_signal.service import files
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.tinker import checkpoint_path

router = new_router()


# ----- saving (futures) ------------------------------------------------------------------------
@router.post("/save_weights", response_model=FutureHandle)
async def save_weights(request: Request, tenant: Tenant, body: SaveWeightsBody):
    return await _save(request, tenant, body, "training", "save_weights")


@router.post("/save_weights_for_sampler", response_model=FutureHandle)
async def save_weights_for_sampler(request: Request, tenant: Tenant, body: SaveWeightsBody):
    return await _save(request, tenant, body, "sampler", "save_weights_for_sampler")


async def _save(request: Request, tenant: str, body: SaveWeightsBody, wire_type: str, kind: str):
    app = state(request)
    await asyncio.to_thread(app.tinker.model_row, tenant, body.model_id)
    caller_scheme = scheme(request)
    # tinker's save_weights_and_get_sampling_client: no name; answer a sampling session too.
    # `inflight` sampling clients get a snapshot as well (documented in docs/tinker-sdk.md).
    with_sampler = wire_type == "sampler" and body.path is None
    if body.kind not in ("snapshot", "inflight"):
        raise InvalidRequest(f"kind {body.kind!r}: use 'snapshot' or 'inflight'")

    async def operation() -> dict:
        path = await app.tinker.save_weights(
            tenant,
            body.model_id,
            body.path,
            wire_type,
            body.overwrite,
            body.ttl_seconds,
            caller_scheme,
        )
        if not with_sampler:
            return {"type": kind, "path": path}
        models = app.tinker_models
        sampler = await asyncio.to_thread(models.sampler_for_model, tenant, body.model_id, path)
        return {"type": kind, "path": path, "sampling_session_id": sampler.id}

    return start_future(request, tenant, body.model_id, kind, body, operation)


@router.post("/save_weights_external", response_model=FutureHandle)
async def save_weights_external(request: Request, tenant: Tenant, body: SaveWeightsExternalBody):
    """tinker's download path, step 1: the adapter (PEFT files, no optimizer) as an `external`
    checkpoint, `tinker://{run}/external_weights/{name}`; step 2 is `external_weights_urls`."""
    service = state(request).tinker
    await asyncio.to_thread(service.model_row, tenant, body.model_id)
    if body.age_encryption_recipients:
        raise InvalidRequest(
            "age_encryption_recipients is not supported by this server: the files are served "
            "unencrypted over signed URLs; leave it unset"
        )

    async def operation() -> dict:
        checkpoint = await service.save_checkpoint(
            tenant, body.model_id, body.path, "external", body.overwrite, body.ttl_seconds
        )
        return {
            "type": "save_weights_external",
            "path": checkpoint_path(checkpoint, "tinker://"),
            "size_bytes": checkpoint.size,
        }

    return start_future(request, tenant, body.model_id, "save_weights_external", body, operation)


# ----- training runs and checkpoints (REST) ----------------------------------------------------
@router.get("/training_runs", response_model=TrainingRunList)
def list_training_runs(
    request: Request,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0, le=INT_LIMIT - 1)] = 0,
) -> dict:
    return answer.training_run_page(state(request).tinker.list_training_runs(tenant, limit, offset))


@router.get("/training_runs/{run_id}", response_model=TrainingRun)
def get_training_run(request: Request, tenant: Tenant, run_id: str) -> dict:
    return answer.training_run(state(request).tinker.get_training_run(tenant, run_id))


@router.get("/training_runs/{run_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(request: Request, tenant: Tenant, run_id: str):
    tinker_ids = scheme(request) == "tinker://"
    listed = state(request).tinker.list_checkpoints(tenant, run_id, tinker_ids)
    return CheckpointList(checkpoints=answer.checkpoint_list(listed, tinker_ids))


@router.get("/models/{run_id}/checkpoints", response_model=CheckpointList)
def list_model_checkpoints(request: Request, tenant: Tenant, run_id: str):
    listed = state(request).tinker.list_checkpoints(tenant, run_id)
    return CheckpointList(checkpoints=answer.checkpoint_list(listed))


@router.get(
    "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/archive",
    response_class=FileResponse,
    responses=GZIP,
)
async def checkpoint_archive(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    service = state(request).tinker
    checkpoint = await asyncio.to_thread(service.find_checkpoint, tenant, run_id, checkpoint_id)
    arcname = checkpoint.name.replace("/", "_")
    folder = await asyncio.to_thread(state(request).runs.storage.local, checkpoint.path)
    path = await asyncio.to_thread(files.archive, Path(folder), arcname)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"{run_id}-{arcname}.tar.gz",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


@router.get(
    "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/external_weights_urls",
    response_model=SignedUrls,
)
async def external_weights_urls(
    request: Request, tenant: Tenant, run_id: str, checkpoint_id: str
) -> dict:
    """Signed per-file URLs (no API key needed to fetch them) valid for an hour."""
    base_url = str(request.base_url)
    signed = await asyncio.to_thread(
        state(request).tinker.external_weights_urls, tenant, run_id, checkpoint_id, base_url
    )
    return answer.signed_urls(signed)


@router.get(
    "/checkpoint_files/{checkpoint_id}/{relpath:path}",
    response_class=FileResponse,
    responses=BINARY,
)
def checkpoint_file(
    request: Request,
    checkpoint_id: str,
    relpath: str,
    expires: Annotated[str, Query()] = "",
    signature: Annotated[str, Query()] = "",
):
    """One file of a checkpoint through a signed URL: no API key, the signature is the grant
    (403 when it is wrong, for another file, or expired)."""
    path = state(request).tinker.signed_file(checkpoint_id, relpath, expires, signature)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


_CHECKPOINT = "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}"


@router.post(
    _CHECKPOINT + "/publish", status_code=204, response_class=Response, responses=NO_CONTENT
)
def publish_checkpoint(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    state(request).tinker.set_public(tenant, run_id, checkpoint_id, True)
    return Response(status_code=204)


@router.delete(
    _CHECKPOINT + "/publish", status_code=204, response_class=Response, responses=NO_CONTENT
)
def unpublish_checkpoint(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    state(request).tinker.set_public(tenant, run_id, checkpoint_id, False)
    return Response(status_code=204)


@router.put(_CHECKPOINT + "/ttl", status_code=204, response_class=Response, responses=NO_CONTENT)
def set_checkpoint_ttl(
    request: Request, tenant: Tenant, run_id: str, checkpoint_id: str, body: TtlBody
):
    state(request).tinker.set_ttl(tenant, run_id, checkpoint_id, body.ttl_seconds)
    return Response(status_code=204)


@router.delete(_CHECKPOINT, status_code=204, response_class=Response, responses=NO_CONTENT)
def delete_checkpoint(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    state(request).tinker.delete_checkpoint(tenant, run_id, checkpoint_id)
    return Response(status_code=204)
