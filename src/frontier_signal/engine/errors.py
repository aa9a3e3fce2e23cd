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


class SchedulerStopped(RuntimeError):
    """The engine worker is shutting down and no longer takes or finishes work (a 503)."""
