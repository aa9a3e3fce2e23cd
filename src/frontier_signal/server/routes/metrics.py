"""`GET /metrics`: the Prometheus text format (docs/observability.md). Unauthenticated, like
`/health`: it carries no tenant, key or run id (bind the server where scrapers may reach it)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from frontier_signal.server.openapi import PROMETHEUS_TEXT
from frontier_signal.service.telemetry import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses=PROMETHEUS_TEXT)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.telemetry.render(), media_type=CONTENT_TYPE)
