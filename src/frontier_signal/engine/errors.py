"""Errors raised by the engine and backend.

One root (`EngineError`); each class also inherits the matching stdlib class so callers that
know nothing about Frontier Signal can still catch `ValueError` / `LookupError`. The API faces
map them to HTTP status codes (invalid input → 400, not found → 404).
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class InvalidInputError(EngineError, ValueError):
    """The caller's request is malformed; the message says what was wrong and how to fix it.

    Raised before any state changes: the run stays usable.
    """


class NotFoundError(EngineError, LookupError):
    """Something named in the request does not exist."""

    def __str__(self) -> str:  # LookupError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(NotFoundError):
    """An unknown base model name, or a model whose files are missing."""

    def __init__(self, message: str, available: list[str]):
        super().__init__(f"{message}. Available models: {', '.join(available) or '(none)'}")
        self.available = available


class RunNotFoundError(NotFoundError):
    """No run with this id is loaded in the engine."""


class CheckpointNotFoundError(NotFoundError):
    """A checkpoint path that does not exist or is not a Frontier Signal / PEFT checkpoint."""


class RunNotHeld(RunNotFoundError):
    """The engine worker asked holds no run of this id (a fresh or restarted worker, or the
    run lives elsewhere): the service restores it from its newest training checkpoint."""

    def __init__(self, run_id: str):
        super().__init__(f"run {run_id!r} is not held by this engine worker")
        self.run_id = run_id

    def __reduce__(self):  # pickles across processes with its run id
        return (RunNotHeld, (self.run_id,))


class WorkerLost(EngineError):
    """The engine worker running an operation died before it answered (a 503 the clients
    retry): its runs resume on a live worker from their newest training checkpoint."""


class SchedulerStopped(RuntimeError):
    """The engine worker is shutting down and no longer takes or finishes work (a 503)."""
