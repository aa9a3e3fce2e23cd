"""API keys: `Authorization: Bearer sk-...` → the caller's tenant id.

Keys are stored hashed; a revoked key gets 403, an unknown one 401. With `--no-auth` every
caller is the one local tenant (a development mode that only binds to loopback).
"""

from __future__ import annotations

from fastapi import Request

from frontier_signal.service.errors import Forbidden, Unauthorized

LOCAL_TENANT = "local"


async def tenant_id(request: Request) -> str:
    """FastAPI dependency: the tenant of the key the request carries."""
    state = request.app.state.frontier
    if state.settings.no_auth:
        return LOCAL_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer sk-...' "
            "(create a key with `frontier-signal keys create --name NAME`)"
        )
    row = state.store.find_key(key.strip())
    if row is None:
        raise Unauthorized("invalid API key")
    if row.revoked_at is not None:
        raise Forbidden(f"API key {row.prefix}... was revoked")
    return row.tenant_id
