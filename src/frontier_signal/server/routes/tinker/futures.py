"""Tinker futures: `retrieve_future` (a finished result as JSON, or protobuf when the poll's
`Accept` asks for it; a large one first as metadata only) and `cancel_future`."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import Response

from frontier_signal.server import tinker_proto
from frontier_signal.server.openapi import DetailBody, ErrorBody, Responses
from frontier_signal.server.routes.tinker.common import (
    Tenant,
    TinkerJSONResponse,
    new_router,
    state,
)
from frontier_signal.server.schemas.tinker import RequestIdBody, RetrieveFutureBody
from frontier_signal.server.schemas.tinker_responses import (
    FUTURE_RESULT_SCHEMA,
    CancelledFuture,
)
from frontier_signal.service.errors import ServiceError
from frontier_signal.service.futures import FutureFailed

router = new_router()
PROTO_MEDIA_TYPE = tinker_proto.PROTO_CONTENT_TYPE
# Results larger than this go through tinker's metadata-only step first (the client reserves
# response memory for them); smaller ones come inline at once.
INLINE_RESULT_BYTES = 1024 * 1024
_PROTO_RESULTS = {
    "tinker.forward_backward": tinker_proto.encode_forward_backward_output,
    "tinker.forward": tinker_proto.encode_forward_backward_output,
    "tinker.sample": tinker_proto.encode_sample_response,
}
_RESULT: Responses = {
    200: {
        "description": "The result (JSON, or protobuf when `Accept` asks for it): the "
        "operation's own result, `{type: try_again}` while it runs, `{status: "
        "complete_metadata, response_payload_size}` for a large one, or `{error, category}` "
        "when it failed (tinker).",
        "content": {
            "application/json": {"schema": FUTURE_RESULT_SCHEMA},
            PROTO_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    400: {"model": ErrorBody | DetailBody, "description": "A failed operation (hpcai)."},
}


@router.post("/retrieve_future", responses=_RESULT)
async def retrieve_future(request: Request, tenant: Tenant, body: RetrieveFutureBody):
    app = state(request)
    tinker_client = body.allow_metadata_only is not None
    try:
        result = await app.futures.retrieve(tenant, body.request_id)
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
    encode = _PROTO_RESULTS.get(await app.futures.kind_of(body.request_id) or "")
    payload: bytes | memoryview  # a response's body may be either
    if encode is not None and tinker_proto.is_protobuf(accept):
        payload = await asyncio.to_thread(encode, result)
        content_type = tinker_proto.PROTO_CONTENT_TYPE
    else:
        payload = TinkerJSONResponse(result).body
        content_type = "application/json"
    if body.allow_metadata_only and len(payload) > INLINE_RESULT_BYTES:
        return {"status": "complete_metadata", "response_payload_size": len(payload)}
    return Response(payload, media_type=content_type)


@router.post("/cancel_future", response_model=CancelledFuture)
async def cancel_future(request: Request, tenant: Tenant, body: RequestIdBody):
    cancelled = await state(request).futures.cancel(tenant, body.request_id)
    return CancelledFuture(request_id=body.request_id, cancelled=cancelled)
