"""Sessions and sampling sessions of the tinker SDK (tinker-wire-protocol.md §9.1, §13.4).

A tinker `ServiceClient` opens a session, heartbeats it every 10 s, names its models
`{session_id}:train:{model_seq_id}` and samples through sampling sessions (`Sampler` rows that
pin the weights to sample). A session with no heartbeat for `heartbeat_timeout` seconds expires:
its heartbeat then answers 410 (the SDK stops it) and its models are unloaded from memory (they
stay runs with checkpoints, reloaded on their next use). hpcai has no sessions and its runs are
never touched. Time comes from an injectable clock; expiry is swept on session traffic, so tests
never wait. It knows nothing about HTTP.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable

from frontier_signal.service.errors import Gone, InvalidRequest, NotFound
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import Sampler, TinkerSession

# Sessions end after this long without a heartbeat (the SDK warns only after 120 s of failures).
HEARTBEAT_TIMEOUT_SECONDS = 600.0


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
        if row.status != "active":
            raise Gone(f"session {session_id!r} is {row.status}")
        self.store.update_tinker_session(session_id, last_heartbeat_at=self.clock())

    def finish(self, tenant_id: str, session_id: str) -> None:
        self.get(tenant_id, session_id)
        self.store.update_tinker_session(session_id, status="finished")

    def expire(self) -> list[str]:
        """Expire sessions past the heartbeat timeout; returns their ids."""
        deadline = self.clock() - self.heartbeat_timeout
        stale = self.store.stale_tinker_sessions(deadline)
        if stale:
            self.store.expire_tinker_sessions(deadline)
        return stale

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
