"""API keys: `Authorization: Bearer sk-...` (or `X-API-Key: sk-...` on the Tinker and Anthropic
faces) → the caller's tenant id. Every key also works spelled `tml-...` (its `sk-fs-` prefix
swapped), the only form the official tinker SDK accepts (docs/tinker-sdk.md).

Keys are stored hashed; a revoked key gets 403, an unknown one 401. With `--no-auth` every
caller is the one local tenant (a development mode that only binds to loopback).
"""

from __future__ import annotations

import asyncio

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
    return await _tenant_of_key(state, key.strip())


async def api_key_tenant_id(request: Request) -> str:
    """FastAPI dependency of the Tinker face: the tenant of the `X-API-Key` header's key."""
    state = request.app.state.frontier
    if state.settings.no_auth:
        return LOCAL_TENANT
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        raise Unauthorized(
            "missing API key: send 'X-API-Key: sk-...' (the hpcai SDK sends its api_key= "
            "argument or HPCAI_API_KEY; the tinker SDK takes the same key spelled tml-...)"
        )
    return await _tenant_of_key(state, key)


async def bearer_or_api_key_tenant_id(request: Request) -> str:
    """FastAPI dependency of the Anthropic face: `X-API-Key` (the anthropic SDK's `api_key=`)
    or `Authorization: Bearer` (its `auth_token=`), the same keys as everywhere."""
    state = request.app.state.frontier
    if state.settings.no_auth:
        return LOCAL_TENANT
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return await _tenant_of_key(state, key)
    return await tenant_id(request)


async def _tenant_of_key(state, key: str) -> str:
    # A worker thread: on PostgreSQL the lookup is a round trip the event loop must not wait on.
    row = await asyncio.to_thread(state.store.find_key, key)
    if row is None:
        raise Unauthorized("invalid API key")
    if row.revoked_at is not None:
        raise Forbidden(f"API key {row.prefix}... was revoked")
    return row.tenant_id
