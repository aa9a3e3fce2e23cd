"""Memory admission: a run is created only when its memory fits the server's and its tenant's
budgets (settings `run_memory_budget_mib`, `run_memory_per_tenant_mib`).

A run's memory is estimated by the engine from its base model's layer shapes, rank, targets
and optimizer (`Engine.estimate_run_bytes`: fp32 adapter + gradient + optimizer state); the
budget holds the estimates of every active run, is filled from the store at start (runs created
before estimates were stored count 0) and freed when a run is deleted. The base models
themselves are shared and not counted. This module knows nothing about HTTP or the engine.
"""

from __future__ import annotations

import psutil

from frontier_signal.service.errors import Conflict, InvalidRequest
from frontier_signal.service.settings import ServiceSettings

MIB = 1024 * 1024
# Stored in a run's `effective` settings, so the budget survives a restart.
ESTIMATE_KEY = "memory_estimate_bytes"


def _mib(size: float) -> str:
    return f"{size / MIB:,.1f} MiB"


class MemoryBudget:
    """Bytes held by active runs, per tenant and in all, against two limits."""

    def __init__(self, server_bytes: int, tenant_bytes: int):
        self.server_bytes = server_bytes
        self.tenant_bytes = min(tenant_bytes, server_bytes)
        self._held: dict[str, tuple[str, int]] = {}  # run id → (tenant, bytes)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> MemoryBudget:
        """Budgets from the settings; 0 means derived from the machine's RAM (half of it for
        the server, a quarter for one tenant)."""
        ram = psutil.virtual_memory().total
        server = settings.run_memory_budget_mib * MIB or ram / 2
        tenant = settings.run_memory_per_tenant_mib * MIB or ram / 4
        return cls(int(server), int(tenant))

    def used(self, tenant_id: str | None = None) -> int:
        return sum(b for t, b in self._held.values() if tenant_id is None or t == tenant_id)

    def check(self, tenant_id: str, need: int) -> None:
        """Raise if a run needing `need` bytes does not fit now.

        Raises:
            InvalidRequest: it would not fit even with nothing else held (lower the rank).
            Conflict: it does not fit beside the runs already held (delete one first).
        """
        limit = min(self.tenant_bytes, self.server_bytes)
        if need > limit:
            raise InvalidRequest(
                f"this run needs about {_mib(need)} for its LoRA weights, gradients and "
                f"optimizer state, more than a key may hold on this server ({_mib(limit)}); "
                "lower lora_r / rank or train fewer modules"
            )
        tenant_left = self.tenant_bytes - self.used(tenant_id)
        server_left = self.server_bytes - self.used()
        if need > tenant_left:
            raise Conflict(
                f"this run needs about {_mib(need)}; your runs already hold "
                f"{_mib(self.used(tenant_id))} of this key's {_mib(self.tenant_bytes)}, leaving "
                f"{_mib(max(tenant_left, 0))}: delete a run, or lower lora_r / rank"
            )
        if need > server_left:
            raise Conflict(
                f"this run needs about {_mib(need)}; the server's runs already hold "
                f"{_mib(self.used())} of its {_mib(self.server_bytes)}, leaving "
                f"{_mib(max(server_left, 0))}: retry later, or lower lora_r / rank"
            )

    def reserve(self, tenant_id: str, run_id: str, need: int) -> None:
        """`check`, then hold `need` bytes for `run_id` (no await in between: atomic on the
        event loop)."""
        self.check(tenant_id, need)
        self._held[run_id] = (tenant_id, need)

    def hold(self, tenant_id: str, run_id: str, need: int) -> None:
        """Count a run that already exists (at start), without checking."""
        self._held[run_id] = (tenant_id, need)

    def release(self, run_id: str) -> None:
        self._held.pop(run_id, None)
