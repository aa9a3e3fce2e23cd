"""The local pipeline: conversation data → train → ONNX → chat on onnxruntime, no server.

The four classes load lazily, so `from frontier_signal.local import ChatInterface` needs only
onnxruntime, tokenizers and jinja2 (no torch): the chat side runs on an edge box.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frontier_signal.local.chat_interface import ChatInterface
    from frontier_signal.local.data_handler import ConversationDataHandler
    from frontier_signal.local.onnx_converter import ONNXConverter
    from frontier_signal.local.trainer import LLMTrainer

_EXPORTS = {
    "ConversationDataHandler": "frontier_signal.local.data_handler",
    "LLMTrainer": "frontier_signal.local.trainer",
    "ONNXConverter": "frontier_signal.local.onnx_converter",
    "ChatInterface": "frontier_signal.local.chat_interface",
}
__all__ = ["ChatInterface", "ConversationDataHandler", "LLMTrainer", "ONNXConverter"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
