"""Liveness (`/health`: the process answers) and readiness (`/ready`: models loaded, store up)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request):
    state = request.app.state.frontier
    try:
        state.store.ping()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return JSONResponse({"status": "not_ready", "detail": f"store: {exc}"}, 503)
    if state.startup_error:
        return JSONResponse({"status": "not_ready", "detail": state.startup_error}, 503)
    if not state.ready:
        return JSONResponse({"status": "loading", "models": state.settings.models}, 503)
    return {
        "status": "ready",
        "models": state.scheduler.engine.loaded_models(),
        "scheduler": state.scheduler.snapshot(),
    }
