"""What every OpenAI route shares: the router settings, the tenant dependency, the response
header fields, and streaming a generation as OpenAI's server-sent events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from frontier_signal import __version__
from frontier_signal.server.auth import tenant_id
from frontier_signal.server.openapi import OPENAI_ERRORS
from frontier_signal.server.schemas.openai import new_id, now
from frontier_signal.server.streaming import GenerationStream, sse

Tenant = Annotated[str, Depends(tenant_id)]
FINGERPRINT = f"fs-{__version__}"


def new_router() -> APIRouter:
    return APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERRORS)


def state(request: Request):
    return request.app.state.frontier


def header(prefix: str, model: str) -> dict:
    """id, created, model and system_fingerprint of one answer (and all its chunks)."""
    return {
        "id": new_id(prefix),
        "created": now(),
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }


def sse_response(request, tenant, target, prompts, params, n, tokenizer, events):
    """Run the generation in the background and stream what `events` makes of its tokens."""
    generation = GenerationStream.serving(
        state(request), tenant, target, prompts, params, n, tokenizer
    )
    return generation.response(events, sse, _error_event, "data: [DONE]\n\n")


def _error_event(status: int, type_: str, message: str) -> str:
    return sse({"error": {"message": message, "type": type_, "code": status, "param": None}})
