"""Frontier Signal: self-hostable LoRA fine-tuning and serving, and the SDK that drives it.

Importing this package never imports torch: it exposes the HTTP SDK (`SignalClient` and
friends, from `frontier_signal.client`); the training engine lives in `frontier_signal.engine`
and `frontier_signal.backend`, installed with the `server` extra.
"""

__version__ = "0.1.0"

from . import client as _client  # noqa: E402  (after __version__ so the SDK can read it)
from .client import *  # noqa: E402, F403  (the SDK's public names, listed once in client/__init__)

__all__ = [*_client.__all__, "__version__"]
