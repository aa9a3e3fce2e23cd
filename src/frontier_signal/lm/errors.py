"""Exceptions of `frontier_signal.lm` that are its own.

Errors from the server (HTTP status errors, timeouts, broken connections) are the `openai`
package's own classes (`openai.RateLimitError`, `openai.NotFoundError`, `openai.APIConnectionError`
...): both providers are built on the official `openai` client and let its exceptions through
unchanged, so code written against `openai` keeps catching what it catches today.
"""

from __future__ import annotations


class LMError(Exception):
    """Root of the errors `frontier_signal.lm` raises itself (not the `openai` package's)."""


class ConfigError(LMError, ValueError):
    """Configuration missing or malformed; the message names the variable or argument to fix."""
