"""Named LoRA adapters: PEFT folders the operator registers, servable by name by every key.

Two sources, like the base model registry (`$FRONTIER_SIGNAL_HOME/models.json`):
- `$FRONTIER_SIGNAL_HOME/adapters.json`: `{"name": {"path": "/peft/folder", "base_model": "..."}}`
  (`base_model` optional: else the folder's adapter_config.json `base_model_name_or_path`);
- the server's `--adapter NAME=PATH` option (`FRONTIER_SIGNAL_ADAPTERS`), winning on equal names.

The file is read on each lookup, so an entry added while the server runs is servable at once.
This module only names folders; loading (on first use, LRU-bounded) is the engine's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from frontier_signal.paths import data_home


@dataclass(frozen=True)
class AdapterSource:
    """A PEFT LoRA folder registered under a name."""

    name: str
    path: Path
    base_model: str = ""  # "" → adapter_config.json's base_model_name_or_path


def check_adapter_name(name: str) -> None:
    """Raises ValueError for a name that would shadow a run, a step, a checkpoint or a path."""
    if not name or "@" in name or name.startswith(("run_", "tinker://", "hpcai://")):
        raise ValueError(
            f"adapter name {name!r}: use a non-empty name without '@' that does not start "
            "with 'run_', 'tinker://' or 'hpcai://'"
        )


def parse_adapter_option(option: str) -> AdapterSource:
    """`NAME=PATH` (the serve option) → its source.

    Raises:
        ValueError: not NAME=PATH, or a bad name.
    """
    name, equals, path = option.partition("=")
    if not equals or not path.strip():
        raise ValueError(f"--adapter {option!r}: expected NAME=PATH (a PEFT adapter folder)")
    check_adapter_name(name.strip())
    return AdapterSource(name.strip(), Path(path.strip()).expanduser())


def registered_adapters(options: list[str] | tuple[str, ...] = ()) -> dict[str, AdapterSource]:
    """Adapters from adapters.json, then the `NAME=PATH` options.

    Raises:
        ValueError: adapters.json is not valid, or a bad option.
    """
    path = data_home() / "adapters.json"
    sources: dict[str, AdapterSource] = {}
    if path.exists():
        try:
            for name, entry in json.loads(path.read_text()).items():
                check_adapter_name(name)
                folder = Path(entry["path"]).expanduser()
                sources[name] = AdapterSource(name, folder, entry.get("base_model", ""))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(
                f"adapter registry {path}: {exc}; expected "
                '{"name": {"path": "/peft/folder", "base_model": "optional base model"}}'
            ) from exc
    sources.update(_parsed_options(tuple(options)))
    return sources


@lru_cache(maxsize=8)
def _parsed_options(options: tuple[str, ...]) -> dict[str, AdapterSource]:
    """The serve options never change while the server runs: parsed once."""
    parsed = (parse_adapter_option(option) for option in options)
    return {source.name: source for source in parsed}


def adapter_base_model(source: AdapterSource) -> str:
    """The base model a registered adapter is for ("" when neither the entry nor the folder's
    adapter_config.json says)."""
    if source.base_model:
        return source.base_model
    try:
        config = json.loads((source.path / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    return str(config.get("base_model_name_or_path") or "")
