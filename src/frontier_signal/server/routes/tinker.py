"""The Tinker-style API (`/api/v1`, docs/tinker-api.md, docs/tinker-sdk.md): thin handlers over
`TinkerService`, `SessionService` and `FutureService`, spoken by the hpcai 0.2.0 SDK and the
official tinker 0.38 SDK (tinker-wire-protocol.md).

One protocol, two encodings: a protobuf forward_backward body is decoded (`tinker_proto`) into
the same pydantic body as a JSON one and runs the same handler; a finished future's result is
stored as JSON and encoded as protobuf only when the poll's `Accept` asks for it. Asynchronous
operations answer `{"request_id", "model_id"}` at once and are polled through
`retrieve_future`; a failed operation answers that poll with `{"error", "category"}` (tinker) or
400 `{"detail": message}` (hpcai). JSON keeps NaN/Infinity (the clients parse them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.background import BackgroundTask

from frontier_signal.server import tinker_proto
from frontier_signal.server.auth import api_key_tenant_id
from frontier_signal.server.openapi import (
    BINARY,
    GZIP,
    NO_CONTENT,
    TINKER_ERRORS,
    DetailBody,
    ErrorBody,
)
from frontier_signal.server.schemas.tinker import (
    CreateModelBody,
    CreateSamplingSessionBody,
    CreateSessionBody,
    ForwardBackwardBody,
    ForwardBody,
    LoadWeightsBody,
    ModelBody,
    OptimStepBody,
    RequestIdBody,
    RetrieveFutureBody,
    SampleBody,
    SaveWeightsBody,
    SaveWeightsExternalBody,
    SessionBody,
    TelemetryBody,
    TtlBody,
    WeightsInfoBody,
    forward_backward_output,
    input_tokens,
    sample_output,
    to_datums,
    to_optimizer_overrides,
    to_sampling_params,
)
from frontier_signal.service import files
from frontier_signal.service.errors import InvalidRequest, ServiceError
from frontier_signal.service.futures import FutureFailed
from frontier_signal.service.sessions import session_model_id
from frontier_signal.service.tinker import checkpoint_path

PROTO_MEDIA_TYPE = tinker_proto.PROTO_CONTENT_TYPE


class TinkerJSONResponse(JSONResponse):
    """JSON that keeps NaN / Infinity as the literals Python's json reads back (Starlette's
    default refuses them, which would turn a diverged loss into a 500 polled for ever)."""

    def render(self, content) -> bytes:
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


router = APIRouter(
    prefix="/api/v1",
    tags=["tinker"],
    default_response_class=TinkerJSONResponse,
    responses=TINKER_ERRORS,
)
Tenant = Annotated[str, Depends(api_key_tenant_id)]


def _state(request: Request):
    return request.app.state.frontier


def _future(
    request: Request,
    tenant: str,
    model_id: str | None,
    kind: str,
    body,
    operation,
    seq_scope: str | None = None,
) -> dict:
    """Record and start an operation; answer its future handle. A body's `seq_id` (tinker)
    orders a model's operations and de-duplicates resends; hpcai's X-Idempotency-Key does the
    latter where there is none."""
    key = request.headers.get("x-idempotency-key")
    if key is not None and not 0 < len(key) <= 190:
        raise InvalidRequest("X-Idempotency-Key must be 1 to 190 characters")
    seq_id = getattr(body, "seq_id", None)
    request_id = _state(request).futures.submit(
        tenant, model_id, kind, body.model_dump(), key, operation, seq_id, seq_scope
    )
    return {"request_id": request_id, "model_id": model_id}


def _scheme(request: Request) -> str:
    """Checkpoint paths in the caller's scheme: hpcai accepts only hpcai://, tinker only
    tinker:// (tinker-wire-protocol.md §13.4); told apart by the SDK's User-Agent."""
    agent = request.headers.get("user-agent", "")
    return "tinker://" if "tinker" in agent.lower() else "hpcai://"


# ----- tinker start-up handshake and sessions --------------------------------------------------
@router.post("/client/config")
async def client_config(request: Request, tenant: Tenant) -> dict:
    return _state(request).tinker.client_flags()


@router.post("/client/dynamic_config")
async def client_dynamic_config(request: Request, tenant: Tenant) -> dict:
    return _state(request).tinker.client_dynamic_flags()


async def _sweep(request: Request) -> None:
    """Expire silent sessions (unloading their models) and checkpoints past their TTL."""
    state = _state(request)
    for session_id in state.sessions.expire():
        for row in state.store.list_runs():
            if (row.config or {}).get("session_id") == session_id:
                await state.runs.unload(row.tenant_id, row.id)
    await asyncio.to_thread(state.tinker.sweep_expired_checkpoints)


@router.post("/create_session")
async def create_session(request: Request, tenant: Tenant, body: CreateSessionBody) -> dict:
    await _sweep(request)
    row = _state(request).sessions.create(
        tenant, body.tags, body.user_metadata or {}, body.sdk_version
    )
    return {"type": "create_session", "session_id": row.id}


@router.post("/session_heartbeat")
async def session_heartbeat(request: Request, tenant: Tenant, body: SessionBody) -> dict:
    await _sweep(request)
    _state(request).sessions.heartbeat(tenant, body.session_id)
    return {"type": "session_heartbeat"}


@router.post("/sessions/{session_id}/finish")
async def finish_session(request: Request, tenant: Tenant, session_id: str) -> dict:
    _state(request).sessions.finish(tenant, session_id)
    return {"session_id": session_id, "status": "finished"}


@router.get("/sessions")
async def list_sessions(
    request: Request,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    await _sweep(request)
    return {"sessions": _state(request).sessions.list(tenant, limit, offset)}


@router.get("/sessions/{session_id}")
async def get_session(request: Request, tenant: Tenant, session_id: str) -> dict:
    state = _state(request)
    row = state.sessions.get(tenant, session_id)
    runs = [
        run.id
        for run in state.store.list_runs(tenant)
        if (run.config or {}).get("session_id") == session_id
    ]
    return {
        "training_run_ids": runs,
        "sampler_ids": state.sessions.samplers_of(session_id),
        "user_metadata": {str(k): str(v) for k, v in row.user_metadata.items()},
        "status": row.status,
    }


@router.post("/create_sampling_session")
async def create_sampling_session(
    request: Request, tenant: Tenant, body: CreateSamplingSessionBody
) -> dict:
    state = _state(request)
    state.sessions.active(tenant, body.session_id)
    sampler = _new_sampler(request, tenant, body.session_id, body.model_path, body.base_model)
    return {"type": "create_sampling_session", "sampling_session_id": sampler.id}


def _new_sampler(request, tenant, session_id, model_path, base_model):
    state = _state(request)
    if model_path:
        checkpoint = state.tinker.resolve(tenant, model_path)
        base_model = state.store.get_run(checkpoint.run_id).base_model
    elif base_model:
        state.tinker.check_base_model(base_model)
    else:
        raise InvalidRequest("send model_path (a sampler checkpoint) or base_model")
    return state.sessions.create_sampler(tenant, session_id, base_model, model_path)


@router.get("/samplers/{sampler_id}")
async def get_sampler(request: Request, tenant: Tenant, sampler_id: str) -> dict:
    row = _state(request).sessions.sampler(tenant, sampler_id)
    return {"sampler_id": row.id, "base_model": row.base_model, "model_path": row.model_path}


@router.post("/weights_info")
async def weights_info(request: Request, tenant: Tenant, body: WeightsInfoBody) -> dict:
    return _state(request).tinker.weights_info(tenant, body.tinker_path)


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
    if body.optimizer_config and body.optimizer_config.get("type", "adamw") != "adamw":
        raise InvalidRequest("only the adamw optimizer is supported by this server")
    lora = body.lora_config
    run_id = None
    if body.session_id is not None:
        _state(request).sessions.active(tenant, body.session_id)
        run_id = session_model_id(body.session_id, body.model_seq_id or 0)
    switches = (lora.train_attn, lora.train_mlp, lora.train_unembed)
    await service.check_memory(tenant, body.base_model, lora.rank, switches)  # 4xx at once

    async def operation() -> dict:
        row = await service.create_model(
            tenant,
            body.base_model,
            lora.rank,
            lora.seed,
            lora.train_attn,
            lora.train_mlp,
            lora.train_unembed,
            run_id,
            body.session_id,
            body.user_metadata,
        )
        return {"type": "create_model", "model_id": row.id}

    handle = _future(request, tenant, None, "create_model", body, operation)
    return {"request_id": handle["request_id"], "model_id": run_id}


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
async def forward_backward(request: Request, tenant: Tenant) -> dict:
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
    return _forward(
        request, tenant, body, body.forward_backward_input, forward_only=body.forward_only
    )


@router.post("/forward")
async def forward(request: Request, tenant: Tenant, body: ForwardBody) -> dict:
    return _forward(request, tenant, body, body.forward_input, forward_only=True)


@contextlib.contextmanager
def _settles_seq(request: Request, body):
    """A request refused before it becomes a future still takes its place in the model's
    `seq_id` order, so the model's next operation does not wait for it."""
    try:
        yield
    except Exception:
        _state(request).futures.skip_seq(body.model_id, getattr(body, "seq_id", None))
        raise


def _forward(request: Request, tenant: str, body, batch, forward_only: bool) -> dict:
    service = _state(request).tinker
    with _settles_seq(request, body):
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
    with _settles_seq(request, body):
        service.model_row(tenant, body.model_id)
        overrides = to_optimizer_overrides(body)

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
    row = service.model_row(tenant, body.model_id)
    scheme = _scheme(request)
    # tinker's save_weights_and_get_sampling_client: no name; answer a sampling session too.
    # `inflight` sampling clients get a snapshot as well (documented in docs/tinker-sdk.md).
    with_sampler = wire_type == "sampler" and body.path is None
    if body.kind not in ("snapshot", "inflight"):
        raise InvalidRequest(f"kind {body.kind!r}: use 'snapshot' or 'inflight'")

    async def operation() -> dict:
        path = await service.save_weights(
            tenant, body.model_id, body.path, wire_type, body.overwrite, body.ttl_seconds, scheme
        )
        if not with_sampler:
            return {"type": kind, "path": path}
        session_id = (row.config or {}).get("session_id")
        sampler = _new_sampler(request, tenant, session_id, path, None)
        return {"type": kind, "path": path, "sampling_session_id": sampler.id}

    return _future(request, tenant, body.model_id, kind, body, operation)


@router.post("/save_weights_external")
async def save_weights_external(
    request: Request, tenant: Tenant, body: SaveWeightsExternalBody
) -> dict:
    """tinker's download path, step 1: the adapter (PEFT files, no optimizer) as an `external`
    checkpoint, `tinker://{run}/external_weights/{name}`; step 2 is `external_weights_urls`."""
    service = _state(request).tinker
    service.model_row(tenant, body.model_id)
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

    return _future(request, tenant, body.model_id, "save_weights_external", body, operation)


@router.post("/load_weights")
async def load_weights(request: Request, tenant: Tenant, body: LoadWeightsBody) -> dict:
    service = _state(request).tinker
    checkpoint = service.resolve(tenant, body.path)  # a bad path is a 4xx at once
    if body.session_id is None:
        if not body.model_id:
            raise InvalidRequest("send model_id, or session_id with model_seq_id")
        model_id = body.model_id
        service.model_row(tenant, model_id)
        create = None
    else:  # tinker: a new model made from the checkpoint, named by session and seq id
        _state(request).sessions.active(tenant, body.session_id)
        model_id = session_model_id(body.session_id, body.model_seq_id or 0)
        source = _state(request).store.get_run(checkpoint.run_id)
        if body.base_model and body.base_model != source.base_model:
            raise InvalidRequest(
                f"the checkpoint is of {source.base_model!r}, not {body.base_model!r}"
            )
        lora = source.config.get("lora_config") or {}

        async def create() -> None:
            await service.create_model(
                tenant,
                source.base_model,
                int(source.config.get("lora_r", 32)),
                None,
                lora.get("train_attn", True),
                lora.get("train_mlp", False),
                lora.get("train_unembed", False),
                model_id,
                body.session_id,
                body.user_metadata,
            )

    async def operation() -> dict:
        if create is not None:
            await create()
        await service.load_weights(tenant, model_id, body.path, body.optimizer)
        return {"type": "load_weights", "path": body.path}

    scope = None if create is None else model_id + ":create"
    return _future(request, tenant, model_id, "load_weights", body, operation, scope)


# ----- sampling --------------------------------------------------------------------------------
def _sampling(request: Request, tenant: str, body: SampleBody):
    unsupported = {
        "topk_prompt_logprobs": body.topk_prompt_logprobs,
        "topk_sample_logprobs": body.topk_sample_logprobs,
        "target_prompt_logprobs": body.target_prompt_logprobs,
        "prompt_alt_tokens_k": body.prompt_alt_tokens_k,
        "prompt_logprobs_last_n": body.prompt_logprobs_last_n,
    }
    for name, value in unsupported.items():
        if value:
            raise InvalidRequest(f"{name} is not supported by this server; leave it unset")
    service = _state(request).tinker
    if body.sampling_session_id:
        sampler = _state(request).sessions.sampler(tenant, body.sampling_session_id)
        body = body.model_copy(
            update={"model_path": sampler.model_path, "base_model": sampler.base_model}
        )
    want_prompt_logprobs = bool(body.prompt_logprobs)
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
            want_prompt_logprobs,
        )
        return sample_output(result, want_prompt_logprobs)

    return operation


@router.post("/asample")
async def asample(request: Request, tenant: Tenant, body: SampleBody) -> dict:
    operation = _sampling(request, tenant, body)
    handle = _future(request, tenant, None, "sample", body, operation, body.sampling_session_id)
    ids = [f"{handle['request_id']}:{i}" for i in range(body.num_samples)]
    return {"request_id": handle["request_id"], "sample_sequence_ids": ids}


@router.post("/sample")
async def sample(request: Request, tenant: Tenant, body: SampleBody) -> dict:
    operation = _sampling(request, tenant, body)
    with _state(request).requests.counted(tenant):  # in flight, like every other route
        return await operation()


# ----- futures ---------------------------------------------------------------------------------
# Results larger than this go through tinker's metadata-only step first (the client reserves
# response memory for them); smaller ones come inline at once.
INLINE_RESULT_BYTES = 1024 * 1024
_PROTO_RESULTS = {
    "tinker.forward_backward": tinker_proto.encode_forward_backward_output,
    "tinker.forward": tinker_proto.encode_forward_backward_output,
    "tinker.sample": tinker_proto.encode_sample_response,
}


@router.post(
    "/retrieve_future",
    responses={
        200: {
            "description": "The result (JSON, or protobuf when `Accept` asks for it).",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                PROTO_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        400: {"model": ErrorBody | DetailBody, "description": "A failed operation (hpcai)."},
    },
)
async def retrieve_future(request: Request, tenant: Tenant, body: RetrieveFutureBody):
    state = _state(request)
    tinker_client = body.allow_metadata_only is not None
    try:
        result = await state.futures.retrieve(tenant, body.request_id)
    except FutureFailed as exc:
        if tinker_client:
            return {"error": exc.message, "category": exc.category}
        return TinkerJSONResponse({"detail": exc.message}, status_code=400)
    except ServiceError as exc:
        if tinker_client and exc.status == 404:
            return {"error": exc.message, "category": "user"}
        raise
    if result.get("type") == "try_again":
        return result
    accept = request.headers.get("accept", "")
    encode = _PROTO_RESULTS.get(state.futures.kind_of(body.request_id) or "")
    if encode is not None and tinker_proto.is_protobuf(accept):
        payload = await asyncio.to_thread(encode, result)
        content_type = tinker_proto.PROTO_CONTENT_TYPE
    else:
        payload = TinkerJSONResponse(result).body
        content_type = "application/json"
    if body.allow_metadata_only and len(payload) > INLINE_RESULT_BYTES:
        return {"status": "complete_metadata", "response_payload_size": len(payload)}
    return Response(payload, media_type=content_type)


@router.post("/cancel_future")
async def cancel_future(request: Request, tenant: Tenant, body: RequestIdBody) -> dict:
    cancelled = _state(request).futures.cancel(tenant, body.request_id)
    return {"request_id": body.request_id, "cancelled": cancelled}


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
    tinker_ids = _scheme(request) == "tinker://"
    return {"checkpoints": _state(request).tinker.list_checkpoints(tenant, run_id, tinker_ids)}


@router.get("/models/{run_id}/checkpoints")
async def list_model_checkpoints(request: Request, tenant: Tenant, run_id: str) -> dict:
    return {"checkpoints": _state(request).tinker.list_checkpoints(tenant, run_id)}


@router.get(
    "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/archive",
    response_class=FileResponse,
    responses=GZIP,
)
async def checkpoint_archive(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    state = _state(request)
    checkpoint = state.tinker.find_checkpoint(tenant, run_id, checkpoint_id)
    arcname = checkpoint.name.replace("/", "_")
    folder = await asyncio.to_thread(state.runs.storage.local, checkpoint.path)
    path = await asyncio.to_thread(files.archive, Path(folder), arcname)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"{run_id}-{arcname}.tar.gz",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


@router.get("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/external_weights_urls")
async def external_weights_urls(
    request: Request, tenant: Tenant, run_id: str, checkpoint_id: str
) -> dict:
    """Signed per-file URLs (no API key needed to fetch them) valid for an hour."""
    base_url = str(request.base_url)
    return await asyncio.to_thread(
        _state(request).tinker.external_weights_urls, tenant, run_id, checkpoint_id, base_url
    )


@router.get(
    "/checkpoint_files/{checkpoint_id}/{relpath:path}",
    response_class=FileResponse,
    responses=BINARY,
)
async def checkpoint_file(
    request: Request,
    checkpoint_id: str,
    relpath: str,
    expires: Annotated[str, Query()] = "",
    signature: Annotated[str, Query()] = "",
):
    """One file of a checkpoint through a signed URL: no API key, the signature is the grant
    (403 when it is wrong, for another file, or expired)."""
    path = _state(request).tinker.signed_file(checkpoint_id, relpath, expires, signature)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


@router.post(
    "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/publish",
    status_code=204,
    response_class=Response,
    responses=NO_CONTENT,
)
async def publish_checkpoint(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    _state(request).tinker.set_public(tenant, run_id, checkpoint_id, True)
    return Response(status_code=204)


@router.delete(
    "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/publish",
    status_code=204,
    response_class=Response,
    responses=NO_CONTENT,
)
async def unpublish_checkpoint(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    _state(request).tinker.set_public(tenant, run_id, checkpoint_id, False)
    return Response(status_code=204)


@router.put(
    "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/ttl",
    status_code=204,
    response_class=Response,
    responses=NO_CONTENT,
)
async def set_checkpoint_ttl(
    request: Request, tenant: Tenant, run_id: str, checkpoint_id: str, body: TtlBody
):
    _state(request).tinker.set_ttl(tenant, run_id, checkpoint_id, body.ttl_seconds)
    return Response(status_code=204)


@router.delete(
    "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}",
    status_code=204,
    response_class=Response,
    responses=NO_CONTENT,
)
async def delete_checkpoint(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    _state(request).tinker.delete_checkpoint(tenant, run_id, checkpoint_id)
    return Response(status_code=204)
