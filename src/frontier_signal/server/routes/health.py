"""Liveness (`/health`: the process answers) and readiness (`/ready`: models loaded, store up)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from frontier_signal.server.openapi import errors
from frontier_signal.server.schemas.misc_responses import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", response_model=Ready, responses=errors(503))
async def ready(request: Request):
    state = request.app.state.frontier
    try:
        await asyncio.to_thread(state.store.ping)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return JSONResponse({"status": "not_ready", "detail": f"store: {exc}"}, 503)
    if state.startup_error:
        return JSONResponse({"status": "not_ready", "detail": state.startup_error}, 503)
    if not state.ready:
        return JSONResponse({"status": "loading", "models": state.settings.models}, 503)
    info = state.worker.info()
    # The adapter LRU and prefix caches (sizes, budgets, hits, loads), as the worker published
    # them after its last batch, and the scheduler's counts (pending, generating, cancelled).
    return {
        "status": "ready",
        "models": info.loaded_models,
        "caches": info.caches,
        "scheduler": state.worker.counts(),
        # Every engine worker: id, node, pid, state, base models, runs held, memory.
        "workers": state.worker.workers(),
    }
