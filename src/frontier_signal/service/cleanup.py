"""Start-up repairs of what a crash or an older version left behind; nothing else.

Run once by the app's lifespan, before the first request, after the runs are reconciled:
- stray folders (interrupted atomic writes, checkpoint folders no row records, run folders of
  no run) are removed;
- automatic training checkpoints beyond the retention policy are pruned;
- checkpoint expiries beyond the longest TTL (stored before TTLs were bounded) are clamped.
It never touches a recorded checkpoint a caller saved.
"""

from __future__ import annotations

import logging
from pathlib import Path

from frontier_signal.service import files
from frontier_signal.service.runs import RunService

logger = logging.getLogger(__name__)


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
