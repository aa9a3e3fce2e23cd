"""`frontier_signal.lm`: one interface to chat with our server or OpenAI (seed 003).

Built on the official `openai` package (the `lm` extra: `pip install 'frontier-signal[lm]'`);
imports no torch and nothing from the server side. Every call answers plain dicts. See
`docs/lm.md` for usage and for how the seed's `Synth*` names map onto these.
"""

from .clients import AsyncLMClient, LMClient, UnifiedLMClient, create_chat_completion_async
from .config import LMConfig
from .errors import ConfigError, LMError
from .providers import OpenAIProvider, SignalProvider, UnifiedLMProvider, create_provider
from .warmup import DEFAULT_WARMUP_CACHE, WarmupCache, warmup_model

__all__ = [
    "DEFAULT_WARMUP_CACHE",
    "AsyncLMClient",
    "ConfigError",
    "LMClient",
    "LMConfig",
    "LMError",
    "OpenAIProvider",
    "SignalProvider",
    "UnifiedLMClient",
    "UnifiedLMProvider",
    "WarmupCache",
    "create_chat_completion_async",
    "create_provider",
    "warmup_model",
]
