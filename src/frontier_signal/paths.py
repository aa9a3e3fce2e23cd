"""Where Frontier Signal keeps its files: the data folder (`FRONTIER_SIGNAL_HOME`)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("~/.frontier-signal")


def data_home() -> Path:
    """The data folder: `$FRONTIER_SIGNAL_HOME`, default `~/.frontier-signal`; created if absent."""
    home = Path(os.environ.get("FRONTIER_SIGNAL_HOME", str(DEFAULT_HOME))).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def model_cache_dir() -> Path:
    """Converted base models (safetensors + tokenizer), one folder per model."""
    path = data_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
