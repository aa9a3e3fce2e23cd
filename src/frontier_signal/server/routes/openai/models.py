"""`GET /v1/models` (every name a key can serve, optionally paged), `GET /v1/models/{model}`,
and warmup: `POST /v1/warmup` starts loading a model, `GET /v1/warmup/{model}` tells how far
it is."""

from __future__ import annotations

import asyncio

from fastapi import Query, Request

from frontier_signal.server.routes.openai.common import Tenant, new_router, state
from frontier_signal.server.schemas import openai_responses as wire
from frontier_signal.server.schemas.openai import WarmupBody

router = new_router()


@router.get("/models", response_model=wire.ModelList)
async def list_models(
    request: Request,
    tenant: Tenant,
    after: str | None = Query(None, description="List the models after this id."),
    limit: int | None = Query(None, ge=1, le=1000, description="At most this many (1-1000)."),
):
    """Every name this key can serve; with `after` / `limit`, one page of them."""
    serving = state(request).serving
    items, has_more = await asyncio.to_thread(serving.models_page, tenant, after, limit)
    return wire.model_list(items, has_more)


@router.get("/models/{model:path}", response_model=wire.Model)
async def get_model(request: Request, tenant: Tenant, model: str):
    return wire.model(await asyncio.to_thread(state(request).serving.model, tenant, model))


@router.post("/warmup", response_model=wire.Warmup)
async def warmup(request: Request, tenant: Tenant, body: WarmupBody):
    return wire.warmup(await state(request).serving.warmup(tenant, body.model))


@router.get("/warmup/{model:path}", response_model=wire.Warmup)
def warmup_status(request: Request, tenant: Tenant, model: str):
    return wire.warmup(state(request).serving.warmup_status(tenant, model))
