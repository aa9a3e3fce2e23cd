"""Frontier Signal: self-hostable LoRA fine-tuning and serving, and the SDK that drives it.

Importing this package never imports torch: it exposes the HTTP SDK (`SignalClient` and
friends, from `frontier_signal.client`); the training engine lives in `frontier_signal.engine`
and `frontier_signal.backend`, installed with the `server` extra.
"""

__version__ = "0.1.0"

from .client import (  # noqa: E402  (after __version__ so the SDK can read it)
    APIConnectionError,
    APITimeoutError,
    AsyncInferenceClient,
    AsyncSignalClient,
    AsyncSignalRun,
    AsyncTrainingClient,
    AuthenticationError,
    ChatMessage,
    ConflictError,
    InferenceClient,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RunConfig,
    ServerError,
    SignalAPIError,
    SignalClient,
    SignalRun,
    TrainingClient,
    TrainingExample,
    ValidationError,
)

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
    "__version__",
]
