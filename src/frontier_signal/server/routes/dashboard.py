"""The web dashboard (docs/dashboard.md): its page at `/` and `/dashboard`, its static files
(shipped inside the package: no CDN, no build step) and the small JSON API the page reads,
thin handlers over `DashboardService` with the API's bearer-key auth and tenant isolation.
Downloads, deletes and chat use the Signal and OpenAI routes the SDKs use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from frontier_signal.server.auth import tenant_id
from frontier_signal.server.openapi import DASHBOARD_ERRORS
from frontier_signal.server.schemas import misc_responses as wire
from frontier_signal.server.schemas.rules import INT_LIMIT
from frontier_signal.service.errors import Forbidden, Unauthorized

STATIC = Path(__file__).resolve().parent.parent / "dashboard"
router = APIRouter(tags=["dashboard"], responses=DASHBOARD_ERRORS)
Tenant = Annotated[str, Depends(tenant_id)]


def install(app: FastAPI) -> None:
    """Add the dashboard's routes and static files to the app."""
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")


def _service(request: Request):
    return request.app.state.frontier.dashboard


@router.get("/", include_in_schema=False)
@router.get("/dashboard", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    """No icon (the page sets an empty one); a 204 keeps browsers' consoles clean."""
    return Response(status_code=204)


@router.get(
    "/v1/dashboard/session",
    response_model=wire.DashboardSession,
    response_model_exclude_unset=True,
)
async def session(request: Request) -> dict:
    """Whether the request's key is accepted (always 200, so the sign-in page's probe is not a
    console error) and whether this server asks for a key at all."""
    no_auth = request.app.state.frontier.settings.no_auth
    try:
        tenant = await tenant_id(request)
    except (Unauthorized, Forbidden) as exc:
        return {"signed_in": False, "no_auth": no_auth, "message": str(exc)}
    return {"signed_in": True, "no_auth": no_auth, "tenant_id": tenant}


@router.get("/v1/dashboard/runs", response_model=wire.RunSummaryList)
def runs(request: Request, tenant: Tenant) -> dict:
    return {"data": _service(request).list_runs(tenant)}


@router.get("/v1/dashboard/runs/{run_id}", response_model=wire.RunDetail)
def run(request: Request, tenant: Tenant, run_id: str) -> dict:
    return _service(request).run_detail(tenant, run_id)


@router.get("/v1/dashboard/runs/{run_id}/metrics", response_model=wire.MetricPoints)
def run_metrics(
    request: Request, tenant: Tenant, run_id: str, after: int = Query(-1, ge=-1, le=INT_LIMIT - 1)
) -> dict:
    return _service(request).metrics(tenant, run_id, after)


@router.get("/v1/dashboard/queue", response_model=wire.Queue)
def queue(request: Request, tenant: Tenant) -> dict:
    return _service(request).queue(tenant)


@router.get("/v1/dashboard/models", response_model=wire.BaseModelList)
async def models(request: Request, tenant: Tenant) -> dict:
    return {"data": _service(request).base_models()}
