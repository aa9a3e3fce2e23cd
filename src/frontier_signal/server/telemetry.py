"""HTTP metrics: an ASGI middleware that counts every response by API face, route template and
status, and times it to the last byte of the body (streams included), into `Telemetry`.

The route is the matched template (`/v1/runs/{run_id}`), never the raw path, so run ids and
other values never become labels; a path no route matched is counted as `unmatched`.
"""

from __future__ import annotations

import time

from frontier_signal.service.telemetry import Telemetry

OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/warmup")


def face_of(path: str) -> str:
    """The API face a route template belongs to (a bounded set of label values)."""
    if path.startswith("/api/"):
        return "tinker"
    if path.startswith(OPENAI_ROUTES):
        return "openai"
    if path.startswith(("/v1/dashboard", "/dashboard")) or path == "/":
        return "dashboard"
    if path.startswith("/v1/"):
        return "signal"
    return "ops"  # /health, /ready, /metrics


class TelemetryMiddleware:
    """Plain ASGI, so streaming responses pass straight through."""

    def __init__(self, app, telemetry: Telemetry):
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or _unrouted(scope["path"])
            self.telemetry.http_done(
                face_of(scope["path"] if route == "unmatched" else route),
                route,
                status,
                time.perf_counter() - started,
            )


def _unrouted(path: str) -> str:
    """The label of a path no route template matched (static files are one label)."""
    return "/dashboard/static/{path}" if path.startswith("/dashboard/static/") else "unmatched"
