"""The FastAPI app factory: store, engine worker and services wired together.

`create_app(settings)` builds an app whose lifespan opens (and migrates) the store, starts the
engine worker (by default `InProcessWorker`: a scheduler thread that owns the engine; services
reach it only through typed operations) and the sweep that expires silent Tinker sessions
(service/sessions.py), reconciles runs with their checkpoints and repairs what a crash left
(service/cleanup.py), loads the startup models in the background (`/ready`
turns 200 when they are in), and on shutdown writes a training checkpoint of every run that
moved, finishes queued work and closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI

from frontier_signal import __version__
from frontier_signal.engine import operations as ops
from frontier_signal.engine.worker import EngineWorker, InProcessWorker
from frontier_signal.server import tinker_proto
from frontier_signal.server.auth import LOCAL_TENANT
from frontier_signal.server.errors import install_error_handlers
from frontier_signal.server.openapi import install_openapi
from frontier_signal.server.routes import (
    anthropic,
    dashboard,
    health,
    metrics,
    openai,
    signal,
    tinker,
)
from frontier_signal.server.schemas.signal import run_config
from frontier_signal.server.schemas.tinker import ForwardBackwardBody as TinkerForwardBackwardBody
from frontier_signal.server.telemetry import TelemetryMiddleware
from frontier_signal.service.cleanup import repair_at_start
from frontier_signal.service.dashboard import DashboardService
from frontier_signal.service.futures import FutureService
from frontier_signal.service.requests import RequestLog
from frontier_signal.service.runs import RunService
from frontier_signal.service.serving import ServingService
from frontier_signal.service.sessions import SessionExpiry, SessionService
from frontier_signal.service.settings import ServiceSettings
from frontier_signal.service.store import Store
from frontier_signal.service.telemetry import Telemetry
from frontier_signal.service.tinker import TinkerService
from frontier_signal.service.tinker_models import TinkerModels

logger = logging.getLogger("frontier_signal.server")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class AppState:
    settings: ServiceSettings
    store: Store
    worker: EngineWorker
    runs: RunService
    requests: RequestLog
    futures: FutureService
    tinker: TinkerService
    sessions: SessionService
    serving: ServingService
    ready: bool = False
    started_at: float = field(default_factory=time.time)
    startup_error: str = ""
    tasks: list = field(default_factory=list)
    dashboard: DashboardService | None = None
    tinker_models: TinkerModels | None = None
    session_expiry: SessionExpiry | None = None


def create_app(
    settings: ServiceSettings | None = None, worker: EngineWorker | None = None
) -> FastAPI:
    """Build the app. `worker` (not started) replaces the in-process one the settings describe:
    tests share an already-loaded engine that way, a deployment can pass a remote worker."""
    settings = settings or ServiceSettings()
    if settings.ray_address and importlib.util.find_spec("ray") is None:
        raise ValueError("--ray needs Ray: pip install 'frontier-signal[ray]'")
    if settings.workers > 1 and not settings.ray_address:
        raise ValueError(
            f"--workers {settings.workers} needs --ray: 'local' (this machine) or a Ray cluster "
            "address (docs/scale-out.md); without it one engine runs in this process"
        )
    if settings.no_auth and settings.host not in LOOPBACK:
        raise ValueError(f"--no-auth serves anyone who can connect; refusing host {settings.host}")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state = await start_state(settings, worker or make_worker(settings))
        state.runs.telemetry = app.state.telemetry
        app.state.telemetry.bind(state.worker)
        app.state.frontier = state
        state.tasks.append(asyncio.ensure_future(_load_models(state)))
        try:
            yield
        finally:
            if state.session_expiry is not None:  # start_state sets it
                await state.session_expiry.stop()
            await state.runs.shutdown()
            await asyncio.to_thread(state.worker.stop)
            await state.requests.close()
            state.store.close()
            logger.info("stopped")

    app = FastAPI(
        title="Frontier Signal",
        version=__version__,
        description="LoRA fine-tuning and serving: the Signal, Tinker and OpenAI API faces.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.telemetry = telemetry = Telemetry()
    install_error_handlers(app)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)
    app.add_middleware(RequestIdMiddleware)
    _install_routes(app)
    return app


def _open_store(settings: ServiceSettings) -> Store:
    """The store, migrated, with what the last stop interrupted forgotten."""
    store = Store(settings.resolved_database_url())
    dropped = store.forget_unfinished_requests()
    if dropped:
        logger.warning("%d requests were interrupted by the last stop; retries run afresh", dropped)
    if settings.no_auth:
        store.ensure_tenant(LOCAL_TENANT, "local (no-auth)")
        logger.warning("NO AUTH: every caller on %s is the same tenant", settings.host)
    return store


def _install_routes(app: FastAPI) -> None:
    app.include_router(health.router)
    app.include_router(signal.router)
    app.include_router(tinker.router)
    app.include_router(openai.router)
    app.include_router(anthropic.router)
    app.include_router(metrics.router)
    dashboard.install(app)
    install_openapi(
        app,
        {
            ("post", "/api/v1/forward_backward"): (
                TinkerForwardBackwardBody,
                "TinkerForwardBackwardBody",
                ["application/json", tinker_proto.PROTO_CONTENT_TYPE],
            )
        },
    )


class RequestIdMiddleware:
    """Give every request an id (`request.state.request_id`, the `x-request-id` header) and log
    one structured line per response. Plain ASGI, so streaming responses pass straight through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = f"req_{uuid.uuid4().hex[:20]}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
                logger.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    message["status"],
                    extra={
                        "request_id": request_id,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            await send(message)

        await self.app(scope, receive, send_with_id)


async def start_state(settings: ServiceSettings, worker: EngineWorker) -> AppState:
    """Open the store, start the worker and build the services over them (at startup)."""
    # Before the server accepts requests, yet off the loop as every store call (docs/server.md).
    store = await asyncio.to_thread(_open_store, settings)
    worker.start()
    runs = RunService(settings, store, worker)
    await asyncio.to_thread(runs.reconcile_after_restart)
    await asyncio.to_thread(repair_at_start, runs)
    tinker_service = TinkerService(runs)
    state = AppState(
        settings,
        store,
        worker,
        runs,
        RequestLog(
            store,
            settings.max_queued_per_tenant,
            keep_seconds=settings.request_retention_hours * 3600,
        ),
        FutureService(store, settings.max_queued_per_tenant),
        tinker_service,
        SessionService(store),
        ServingService(runs, tinker_service),
    )
    state.dashboard = DashboardService(runs, run_config)
    state.tinker_models = TinkerModels(state.tinker, state.sessions)
    state.session_expiry = SessionExpiry(state.sessions, runs, state.tinker)
    state.session_expiry.start()
    return state


def make_worker(settings: ServiceSettings) -> EngineWorker:
    """The worker `settings` describe: a pool of Ray actors with `ray_address` (ray is imported
    only then), else an engine on this process's scheduler thread."""
    if settings.ray_address:
        try:
            from frontier_signal.engine.pool import WorkerPool
        except ImportError as exc:
            raise ValueError(
                f"--ray needs Ray: pip install 'frontier-signal[ray]' ({exc})"
            ) from None
        return WorkerPool(
            settings.ray_address, settings.workers, worker_options(settings), settings.worker_cpus
        )
    return in_process_worker(settings)


def in_process_worker(settings: ServiceSettings) -> InProcessWorker:
    """An engine on this process's scheduler thread, as `settings` describe it."""
    return InProcessWorker(**worker_options(settings))


def worker_options(settings: ServiceSettings) -> dict:
    """`InProcessWorker` arguments (plain data: a Ray actor builds its engine from them)."""
    return {
        "engine_options": {
            "device": settings.device,
            "dtype": settings.dtype,
            "decode_4bit": settings.decode_4bit,
            "activation_budget_mib": settings.activation_budget_mib,
        },
        "cache_options": {
            "adapter_mib": settings.adapter_cache_mib,
            "adapter_count": settings.adapter_cache_count,
            "prefix_mib": settings.prefix_cache_mib,
        },
        "scheduler_options": {
            "sample_gather_s": settings.sample_gather_ms / 1000,
            "sample_gather_cap_s": 5 * settings.sample_gather_ms / 1000,
            "slice_tokens": settings.decode_slice_tokens,
        },
    }


async def _load_models(state: AppState) -> None:
    try:
        for name in state.settings.models:
            started = time.perf_counter()
            await state.worker.submit(ops.LoadModel(name))
            logger.info("loaded %s in %.1f s", name, time.perf_counter() - started)
        state.ready = True
    except Exception as exc:  # noqa: BLE001 - reported by /ready and the log
        state.startup_error = f"could not load startup models: {exc}"
        logger.exception("could not load startup models")
