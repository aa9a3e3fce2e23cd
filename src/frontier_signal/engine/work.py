"""What the scheduler queues: a `Work` item (one operation or call and its future) and a
`Generating` sample batch between decode slices. Plain records; the rules are in
engine/scheduler.py and engine/generation.py.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from frontier_signal.backend.sampling import SamplingJob
from frontier_signal.engine.types import TokenCallback

if TYPE_CHECKING:
    from frontier_signal.engine.engine import Engine

logger = logging.getLogger("frontier_signal.engine.scheduler")


@dataclass
class Work:
    kind: str  # "forward_backward" | "sample" | "optim_step" | "call"
    key: str
    base_model: str
    prepare: Callable[[Engine], Any]  # in the engine thread: → request(s), or the call's result
    future: Future = field(default_factory=Future)
    on_token: TokenCallback | None = None
    seq: int = 0
    submitted: float = field(default_factory=time.monotonic)
    owner: str = ""  # whose turn it is, for fairness (a tenant; the key when empty)
    generating: Generating | None = None  # set while its generation is between slices
    finish: Callable[[Any], Any] | None = None  # the outcome → the future's result

    @property
    def fair_owner(self) -> str:
        return self.owner or self.key

    def describe(self, now: float) -> dict:
        """What the dashboard's queue page shows of it (never the request itself)."""
        waited = round(now - self.submitted, 3)
        return {
            "kind": self.kind,
            "key": self.key,
            "base_model": self.base_model,
            "waited_s": waited,
        }


@dataclass
class Generating:
    """A sample batch whose generation is in progress (one job for all its works)."""

    job: SamplingJob
    works: list[Work]
    owners: list[tuple[Work, int]]  # flat request index → (work, index within the work)
    stopped: set[int] = field(default_factory=set)  # flat indices whose caller left
    started: float = field(default_factory=time.monotonic)


@contextlib.contextmanager
def logged_failure():
    """Log (never raise) what an observer or a snapshot publisher raises: metrics must never
    fail the work."""
    try:
        yield
    except Exception:  # noqa: BLE001 - metrics must never fail the work
        logger.exception("the scheduler's observer failed")
