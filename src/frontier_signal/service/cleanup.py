"""Retention and start-up repairs: what a crash or an older version left behind; nothing else.

`prune_automatic_checkpoints` is the retention policy of automatic training checkpoints (run
after each new one). `repair_at_start` runs once, from the app's lifespan, before the first
request, after the runs are reconciled:
- stray folders (interrupted atomic writes, checkpoint folders no row records, run folders of
  no run) are removed;
- automatic training checkpoints beyond the retention policy are pruned;
- checkpoint expiries beyond the longest TTL (stored before TTLs were bounded) are clamped.
It never touches a recorded checkpoint a caller saved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from frontier_signal.service import files
from frontier_signal.service.storage import CheckpointStorage
from frontier_signal.service.store import Store

if TYPE_CHECKING:
    from frontier_signal.service.runs import RunService

logger = logging.getLogger(__name__)


def prune_automatic_checkpoints(
    store: Store, run_id: str, keep: int, storage: CheckpointStorage | None = None
) -> int:
    """Keep a run's newest `keep` automatic training checkpoints (`auto-step-N`,
    `shutdown-step-N`, `unload-step-N`); checkpoints a caller saved (save_state,
    save_weights) are never pruned here. Returns how many were removed."""
    automatic = sorted(
        (
            c
            for c in store.list_checkpoints(run_id, "training")
            if c.name.startswith(files.AUTOMATIC_CHECKPOINTS)
        ),
        key=lambda c: c.created_at,
        reverse=True,
    )
    for checkpoint in automatic[keep:]:
        store.delete_checkpoint(checkpoint.id)
        files.remove(Path(checkpoint.path))
        if storage is not None:
            storage.remove(checkpoint.path)
    return len(automatic[keep:])


def repair_at_start(runs: RunService) -> dict[str, int]:
    """Counts of what was repaired, by kind (logged when non-zero)."""
    store = runs.store
    stray = files.stray_folders(Path(runs.data_dir), store.checkpoint_paths(), store.run_ids())
    for folder in stray:
        files.remove(folder)
    pruned = sum(runs.prune_automatic_checkpoints(row.id) for row in store.list_runs())
    counts = {
        "stray_folders": len(stray),
        "pruned_checkpoints": pruned,
        "clamped_expiries": store.clamp_expiry(files.MAX_TTL_SECONDS),
    }
    if any(counts.values()):
        logger.warning("start-up repairs: %s", counts)
    return counts
