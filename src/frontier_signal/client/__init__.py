"""The `frontier_signal` SDK: HTTP clients of the Signal REST API (no torch here).

Three levels: `SignalClient` / `SignalRun` (Simple API), `TrainingClient` (Advanced Training
API), `InferenceClient` (Advanced Inference API), each with an async twin. See `docs/sdk.md`.
"""

from .async_client import AsyncSignalClient, AsyncSignalRun
from .client import SignalClient, SignalRun
from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    SignalAPIError,
    ValidationError,
)
from .inference import AsyncInferenceClient, InferenceClient
from .training import AsyncTrainingClient, TrainingClient
from .types import ChatMessage, RunConfig, TrainingExample

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AsyncInferenceClient",
    "AsyncSignalClient",
    "AsyncSignalRun",
    "AsyncTrainingClient",
    "AuthenticationError",
    "ChatMessage",
    "ConflictError",
    "InferenceClient",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunConfig",
    "ServerError",
    "SignalAPIError",
    "SignalClient",
    "SignalRun",
    "TrainingClient",
    "TrainingExample",
    "ValidationError",
]
