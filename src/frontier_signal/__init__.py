"""Frontier Signal: self-hostable LoRA fine-tuning and serving, and the SDK that drives it.

Importing this package never imports torch: the training engine lives in `frontier_signal.engine`
and `frontier_signal.backend`, installed with the `server` extra.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
