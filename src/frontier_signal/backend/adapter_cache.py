"""The bounded set of frozen adapters loaded on demand: kept steps, checkpoints, PEFT folders.

A live run's own adapter belongs to the run (`RunState`) and is never here, so it is never
evicted. Everything sampled by path (a run's kept step, a saved checkpoint, a PEFT folder
registered with the server) is loaded from its folder the first time it is named, attached to
the base model's LoRA layers under a key derived from the folder and its file's mtime, and kept
in a least-recently-used set bounded both in count and in bytes (the fp32 LoRA parameters).
When either budget is exceeded the least recently used adapter is detached and dropped; the next
request that names it reads it from disk again, with the same key, so the caller cannot tell.

Adapters resolved for the batch being built are pinned (`batch()`): eviction skips them, so a
batch naming more adapters than the budget holds them all until it ends, then trims. It knows
nothing about tenants or names: the service layer resolves names to folders.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from frontier_signal.backend.lora import Adapter

MIB = 1 << 20


@dataclass
class CacheStats:
    """Counters since start (the bench and tests read them)."""

    hits: int = 0
    loads: int = 0  # misses: a read from disk (a first use or a reload after eviction)
    evictions: int = 0
    evicted_keys: list[str] = field(default_factory=list)  # the last few, newest last


def adapter_bytes(adapter: Adapter) -> int:
    return sum(p.numel() * p.element_size() for p in adapter.parameters())


class AdapterCache:
    """LRU of frozen sampling adapters, `max_count` of them and `max_bytes` in all at most."""

    def __init__(self, max_count: int = 64, max_bytes: int = 1024 * MIB):
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Adapter, int]] = OrderedDict()
        self._bytes = 0
        self._pinned: set[str] | None = None
        self._held: Counter[str] = Counter()  # keys held across batches (`hold`)
        self.stats = CacheStats()

    def configure(self, max_count: int, max_bytes: int) -> None:
        self.max_count, self.max_bytes = max(1, max_count), max(1, max_bytes)
        self._trim()

    @staticmethod
    def key_for(folder: Path, weights_file: Path) -> str:
        """The key an adapter folder gets: same folder and same file → same key, so a reload
        after eviction routes (and prefix-caches) exactly as before; a rewritten file → new."""
        stat = weights_file.stat()
        return f"ckpt:{folder.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"

    def get(self, key: str, load: Callable[[str], Adapter]) -> Adapter:
        """The adapter of `key`, calling `load(key)` (which returns it attached) on a miss."""
        entry = self._entries.get(key)
        if entry is not None:
            self.stats.hits += 1
            self._entries.move_to_end(key)
        else:
            adapter = load(key)
            entry = (adapter, adapter_bytes(adapter))
            self._entries[key] = entry
            self._bytes += entry[1]
            self.stats.loads += 1
        if self._pinned is not None:
            self._pinned.add(key)
        self._trim()
        return entry[0]

    @contextmanager
    def batch(self) -> Iterator[set[str]]:
        """Pin every adapter `get` returns until the block ends (then trim to the budget);
        yields the keys pinned so far, for a caller that must `hold` them longer."""
        outer = self._pinned
        pinned = self._pinned = set() if outer is None else outer
        try:
            yield pinned
        finally:
            if outer is None:
                self._pinned = None
                self._trim()

    def hold(self, keys: set[str]) -> Callable[[], None]:
        """Keep `keys` from eviction until the returned function is called (a generation that
        runs in slices, with other batches loading adapters in between)."""
        keys = set(keys)
        self._held.update(keys)

        def release() -> None:
            self._held.subtract(keys)
            self._held += Counter()  # drop keys no longer held
            self._trim()

        return release

    def _trim(self) -> None:
        pinned = (self._pinned or set()) | set(self._held)
        victims = (k for k in list(self._entries) if k not in pinned)
        while len(self._entries) > self.max_count or self._bytes > self.max_bytes:
            key = next(victims, None)
            if key is None:
                return  # everything left is in the current batch
            adapter, size = self._entries.pop(key)
            adapter.detach()
            self._bytes -= size
            self.stats.evictions += 1
            self.stats.evicted_keys = [*self.stats.evicted_keys[-15:], key]

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def describe(self) -> dict:
        return {
            "adapters": len(self._entries),
            "mib": round(self._bytes / MIB, 2),
            "max_count": self.max_count,
            "max_mib": round(self.max_bytes / MIB, 2),
            "hits": self.stats.hits,
            "loads": self.stats.loads,
            "evictions": self.stats.evictions,
        }
