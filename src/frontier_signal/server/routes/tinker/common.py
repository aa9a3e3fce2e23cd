"""What every Tinker route shares: the JSON response that keeps NaN, the tenant dependency,
starting an operation as a future, and the caller's checkpoint scheme."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from frontier_signal.server.auth import api_key_tenant_id
from frontier_signal.server.openapi import TINKER_ERRORS
from frontier_signal.server.schemas.tinker_responses import FutureHandle
from frontier_signal.service.errors import InvalidRequest


class TinkerJSONResponse(JSONResponse):
    """JSON that keeps NaN / Infinity as the literals Python's json reads back (Starlette's
    default refuses them, which would turn a diverged loss into a 500 polled for ever)."""

    def render(self, content) -> bytes:
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


Tenant = Annotated[str, Depends(api_key_tenant_id)]


def new_router() -> APIRouter:
    """A router of the Tinker face (each concept's module has one; `__init__` joins them)."""
    return APIRouter(
        prefix="/api/v1",
        tags=["tinker"],
        default_response_class=TinkerJSONResponse,
        responses=TINKER_ERRORS,
    )


def state(request: Request):
    return request.app.state.frontier


def start_future(
    request: Request,
    tenant: str,
    model_id: str | None,
    kind: str,
    body,
    operation,
    seq_scope: str | None = None,
) -> FutureHandle:
    """Record and start an operation; answer its future handle. A body's `seq_id` (tinker)
    orders a model's operations and de-duplicates resends; hpcai's X-Idempotency-Key does the
    latter where there is none."""
    key = request.headers.get("x-idempotency-key")
    if key is not None and not 0 < len(key) <= 190:
        raise InvalidRequest("X-Idempotency-Key must be 1 to 190 characters")
    seq_id = getattr(body, "seq_id", None)
    request_id = state(request).futures.submit(
        tenant, model_id, kind, body.model_dump(), key, operation, seq_id, seq_scope
    )
    return FutureHandle(request_id=request_id, model_id=model_id)


@contextlib.contextmanager
def settles_seq(request: Request, body):
    """A request refused before it becomes a future still takes its place in the model's
    `seq_id` order, so the model's next operation does not wait for it."""
    try:
        yield
    except Exception:
        state(request).futures.skip_seq(body.model_id, getattr(body, "seq_id", None))
        raise


def scheme(request: Request) -> str:
    """Checkpoint paths in the caller's scheme: hpcai accepts only hpcai://, tinker only
    tinker:// (tinker-wire-protocol.md §13.4); told apart by the SDK's User-Agent."""
    agent = request.headers.get("user-agent", "")
    return "tinker://" if "tinker" in agent.lower() else "hpcai://"
