"""Tinker sessions (tinker-wire-protocol.md §9.1, §13.4): the SDK's start-up handshake,
sessions and their heartbeats, sampling sessions, and discovery. Expiry is not done here: the
session service's background sweep (service/sessions.py) expires silent sessions."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import Query, Request

from frontier_signal.server.routes.tinker.common import Tenant, new_router, state
from frontier_signal.server.schemas import tinker_outputs as answer
from frontier_signal.server.schemas.rules import INT_LIMIT
from frontier_signal.server.schemas.tinker import (
    CreateSamplingSessionBody,
    CreateSessionBody,
    SessionBody,
    TelemetryBody,
    WeightsInfoBody,
)
from frontier_signal.server.schemas.tinker_responses import (
    ClientConfig,
    ClientDynamicConfig,
    CreatedSamplingSession,
    CreatedSession,
    FinishedSession,
    Heartbeat,
    SamplerInfo,
    ServerCapabilities,
    Session,
    SessionList,
    Status,
    SupportedModel,
    WeightsInfo,
)

router = new_router()


@router.post("/client/config", response_model=ClientConfig)
async def client_config(request: Request, tenant: Tenant) -> dict:
    return state(request).tinker.client_flags()


@router.post("/client/dynamic_config", response_model=ClientDynamicConfig)
async def client_dynamic_config(request: Request, tenant: Tenant) -> dict:
    return state(request).tinker.client_dynamic_flags()


@router.post("/create_session", response_model=CreatedSession)
def create_session(request: Request, tenant: Tenant, body: CreateSessionBody):
    sessions = state(request).sessions
    row = sessions.create(tenant, body.tags, body.user_metadata or {}, body.sdk_version)
    return CreatedSession(session_id=row.id)


@router.post("/session_heartbeat", response_model=Heartbeat)
def session_heartbeat(request: Request, tenant: Tenant, body: SessionBody):
    state(request).sessions.heartbeat(tenant, body.session_id)
    return Heartbeat()


@router.post("/sessions/{session_id}/finish", response_model=FinishedSession)
def finish_session(request: Request, tenant: Tenant, session_id: str):
    state(request).sessions.finish(tenant, session_id)
    return FinishedSession(session_id=session_id)


@router.get("/sessions", response_model=SessionList)
def list_sessions(
    request: Request,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0, le=INT_LIMIT - 1)] = 0,
):
    return SessionList(sessions=state(request).sessions.list(tenant, limit, offset))


@router.get("/sessions/{session_id}", response_model=Session)
def get_session(request: Request, tenant: Tenant, session_id: str):
    return Session(**dataclasses.asdict(state(request).sessions.info(tenant, session_id)))


@router.post("/create_sampling_session", response_model=CreatedSamplingSession)
def create_sampling_session(request: Request, tenant: Tenant, body: CreateSamplingSessionBody):
    app = state(request)
    app.sessions.active(tenant, body.session_id)
    sampler = app.tinker_models.new_sampler(
        tenant, body.session_id, body.model_path, body.base_model
    )
    return CreatedSamplingSession(sampling_session_id=sampler.id)


@router.get("/samplers/{sampler_id}", response_model=SamplerInfo)
def get_sampler(request: Request, tenant: Tenant, sampler_id: str):
    row = state(request).sessions.sampler(tenant, sampler_id)
    return SamplerInfo(sampler_id=row.id, base_model=row.base_model, model_path=row.model_path)


@router.post("/weights_info", response_model=WeightsInfo)
def weights_info(request: Request, tenant: Tenant, body: WeightsInfoBody) -> dict:
    return answer.weights_info(state(request).tinker.weights_info(tenant, body.tinker_path))


# ----- discovery and stubs ---------------------------------------------------------------------
@router.get("/healthz", response_model=Status)
async def healthz():
    return Status(status="ok")


@router.get("/get_server_capabilities", response_model=ServerCapabilities)
async def get_server_capabilities(request: Request, tenant: Tenant):
    names = state(request).tinker.supported_models()
    return ServerCapabilities(supported_models=[SupportedModel(model_name=n) for n in names])


@router.post("/telemetry", response_model=Status)
async def telemetry(body: TelemetryBody):
    # Accepted and dropped: fatal-error events carry request headers (the API key).
    return Status(status="accepted")
