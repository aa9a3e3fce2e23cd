"""Sessions and sampling sessions of the tinker SDK (tinker-wire-protocol.md §9.1, §13.4).

A tinker `ServiceClient` opens a session, heartbeats it every 10 s, names its models
`{session_id}:train:{model_seq_id}` and samples through sampling sessions (`Sampler` rows that
pin the weights to sample). A session with no heartbeat for `heartbeat_timeout` seconds expires:
its heartbeat then answers 410 (the SDK stops it) and its models are unloaded from memory (they
stay runs with checkpoints, reloaded on their next use). hpcai has no sessions and its runs are
never touched. Time comes from an injectable clock, so tests never wait.

`SessionExpiry` is the background task (started and stopped by the app's lifespan) that expires
silent sessions, unloads their models and drops checkpoints past their TTL; a heartbeat that
arrives after its session's deadline is refused (410) on its own, whether or not the sweep has
run yet. It knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from frontier_signal.service.errors import Gone, InvalidRequest, NotFound
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import Run, Sampler, TinkerSession

if TYPE_CHECKING:
    from frontier_signal.service.runs import RunService
    from frontier_signal.service.tinker import TinkerService

logger = logging.getLogger(__name__)

# Sessions end after this long without a heartbeat (the SDK warns only after 120 s of failures).
HEARTBEAT_TIMEOUT_SECONDS = 600.0
# How often the background sweep looks for silent sessions and expired checkpoints.
SWEEP_INTERVAL_SECONDS = 30.0


@dataclass(frozen=True)
class SessionInfo:
    """A session as `GET /sessions/{id}` shows it."""

    training_run_ids: list[str]
    sampler_ids: list[str]
    user_metadata: dict[str, str]
    status: str


def session_model_id(session_id: str, model_seq_id: int) -> str:
    """The model id the tinker SDK derives on its own for `create_training_client_from_state`."""
    return f"{session_id}:train:{model_seq_id}"


class SessionService:
    """Sessions and samplers on top of the store.

    Args:
        store: where sessions and samplers are recorded.
        heartbeat_timeout: seconds without a heartbeat before a session expires.
        clock: the time source (injectable for tests).
    """

    def __init__(
        self,
        store: Store,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.heartbeat_timeout = heartbeat_timeout
        self.clock = clock
        self._expired_by_heartbeat: set[str] = set()  # for the next `expire()` to hand over
        self._expired_lock = threading.Lock()  # heartbeats run in FastAPI's threadpool

    def create(
        self, tenant_id: str, tags: list[str], user_metadata: dict, sdk_version: str
    ) -> TinkerSession:
        now = self.clock()
        row = TinkerSession(
            id=new_id("sess"),
            tenant_id=tenant_id,
            tags=list(tags),
            user_metadata=dict(user_metadata),
            sdk_version=sdk_version[:64],
            status="active",
            created_at=now,
            last_heartbeat_at=now,
        )
        return self.store.add_tinker_session(row)

    def get(self, tenant_id: str, session_id: str) -> TinkerSession:
        row = self.store.get_tinker_session(session_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(
                f"no session {session_id!r}: it does not exist or belongs to another key"
            )
        return row

    def active(self, tenant_id: str, session_id: str) -> TinkerSession:
        """The session, if it may still create models and samplers."""
        row = self.get(tenant_id, session_id)
        if row.status != "active":
            raise InvalidRequest(
                f"session {session_id!r} is {row.status}; create a new ServiceClient"
            )
        return row

    def heartbeat(self, tenant_id: str, session_id: str) -> None:
        """Keep the session alive.

        Raises:
            Gone: the session expired or was finished (the SDK stops heartbeating on 410).
        """
        row = self.get(tenant_id, session_id)
        now = self.clock()
        if row.status == "active" and row.last_heartbeat_at < now - self.heartbeat_timeout:
            self.store.update_tinker_session(session_id, status="expired")
            with self._expired_lock:  # the next sweep unloads its models
                self._expired_by_heartbeat.add(session_id)
            row.status = "expired"
        if row.status != "active":
            raise Gone(f"session {session_id!r} is {row.status}")
        self.store.update_tinker_session(session_id, last_heartbeat_at=now)

    def finish(self, tenant_id: str, session_id: str) -> None:
        self.get(tenant_id, session_id)
        self.store.update_tinker_session(session_id, status="finished")

    def expire(self) -> list[str]:
        """Expire sessions past the heartbeat timeout; returns their ids (and those a late
        heartbeat expired since the last call)."""
        deadline = self.clock() - self.heartbeat_timeout
        stale = self.store.stale_tinker_sessions(deadline)
        if stale:
            self.store.expire_tinker_sessions(deadline)
        with self._expired_lock:
            late, self._expired_by_heartbeat = self._expired_by_heartbeat, set()
        return stale + sorted(late - set(stale))

    def runs_of(self, session_id: str, tenant_id: str | None = None) -> list[Run]:
        """The runs (tinker models) made in a session; with `tenant_id`, only that tenant's."""
        return self.store.list_runs(tenant_id, session_id=session_id)

    def info(self, tenant_id: str, session_id: str) -> SessionInfo:
        row = self.get(tenant_id, session_id)
        return SessionInfo(
            [run.id for run in self.runs_of(session_id, tenant_id)],
            self.samplers_of(session_id),
            {str(k): str(v) for k, v in row.user_metadata.items()},
            row.status,
        )

    def list(self, tenant_id: str, limit: int, offset: int) -> list[str]:
        rows = self.store.list_tinker_sessions(tenant_id)
        return [row.id for row in rows[offset : offset + limit]]

    # ----- samplers ------------------------------------------------------------------------
    def create_sampler(
        self, tenant_id: str, session_id: str | None, base_model: str, model_path: str | None
    ) -> Sampler:
        row = Sampler(
            id=new_id("sampler"),
            tenant_id=tenant_id,
            session_id=session_id,
            base_model=base_model,
            model_path=model_path,
            created_at=self.clock(),
        )
        return self.store.add_sampler(row)

    def sampler(self, tenant_id: str, sampler_id: str) -> Sampler:
        row = self.store.get_sampler(sampler_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(
                f"no sampling session {sampler_id!r}: it does not exist or belongs to another key"
            )
        return row

    def samplers_of(self, session_id: str) -> builtins.list[str]:  # `list` is a method here
        return [row.id for row in self.store.list_samplers(session_id)]


class SessionExpiry:
    """The background sweep: expire silent sessions and unload their models, and drop
    checkpoints past their TTL, every `interval` seconds (`start()` / `await stop()`).

    Args:
        sessions: the session service (its clock decides who is silent).
        runs: unloads the models of an expired session.
        tinker: drops checkpoints past their TTL.
        interval: seconds between sweeps.
    """

    def __init__(
        self,
        sessions: SessionService,
        runs: RunService,
        tinker: TinkerService,
        interval: float = SWEEP_INTERVAL_SECONDS,
    ):
        self.sessions, self.runs, self.tinker = sessions, runs, tinker
        self.interval = interval
        self._task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where `sweep()` must run

    async def sweep(self) -> list[str]:
        """One sweep; returns the sessions it expired, whose models it unloaded."""
        expired = await asyncio.to_thread(self.sessions.expire)
        for session_id in expired:
            for row in await asyncio.to_thread(self.sessions.runs_of, session_id):
                await self.runs.unload(row.tenant_id, row.id)
        await asyncio.to_thread(self.tinker.sweep_expired_checkpoints)
        return expired

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next one
                logger.exception("session sweep failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = self.loop.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
