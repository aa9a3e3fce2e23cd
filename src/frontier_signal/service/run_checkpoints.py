"""The checkpoint rows and folders of runs: recording, pruning, lookups (`RunCheckpoints`).

A run's files: sampler weights after every optimizer step, pruned by the retention policy (step
0, the last `sampler_keep_last` steps and every `sampler_keep_every`-th step are kept), and
training checkpoints (automatic ones pruned to `keep_auto_checkpoints`). This layer records and
finds them in the store and removes their folders (the local copy and the shared one); it sends
nothing to the engine (`run_lifecycle.py` does) and knows nothing about HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from frontier_signal.backend.checkpoints import folder_digest
from frontier_signal.engine import operations as ops
from frontier_signal.service import cleanup, files
from frontier_signal.service.errors import NotFound, Unavailable
from frontier_signal.service.settings import ServiceSettings
from frontier_signal.service.storage import CheckpointStorage
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import Checkpoint, Run
from frontier_signal.service.telemetry import Telemetry

if TYPE_CHECKING:
    from frontier_signal.service.runs import PendingLoss


class RunCheckpoints:
    """The checkpoint half of `RunService` (its base class): rows, folders and retention."""

    settings: ServiceSettings
    store: Store
    storage: CheckpointStorage
    data_dir: Path
    telemetry: Telemetry | None
    _pending_loss: dict[str, PendingLoss]

    def run_row(self, tenant_id: str, run_id: str) -> Run:
        """This tenant's active run (another tenant's run is simply "not found")."""
        row = self.store.get_run(run_id)
        if row is None or row.tenant_id != tenant_id or row.status != "active":
            raise NotFound(f"no run {run_id!r}: it does not exist or belongs to another key")
        return row

    def checkpoint_written(self, saved: ops.SavedCheckpoint | None) -> None:
        """Tell the metrics what a checkpoint write cost."""
        if saved is not None and self.telemetry is not None:
            self.telemetry.checkpoint_written(saved.kind, saved.seconds, saved.size_bytes)

    def record_checkpoint(
        self,
        run_id: str,
        kind: str,
        step: int,
        folder: Path,
        checkpoint_id: str | None = None,
        name: str | None = None,
        digest: tuple[int, str] | None = None,
    ) -> Checkpoint:
        """Store a checkpoint folder's row: its size and digest, as the writer computed them
        (`digest`) or read here (hashing tens of MiB takes a while: call it off the event
        loop)."""
        size, sha256 = digest if digest else folder_digest(folder)
        self.storage.publish(folder)  # shared storage: complete there before it is recorded
        checkpoint = Checkpoint(
            id=checkpoint_id or new_id("ckpt"),
            run_id=run_id,
            name=name or f"{kind}-step-{step}",
            kind=kind,
            step=step,
            path=str(folder),
            size=size,
            sha256=sha256,
            created_at=time.time(),
        )
        return self.store.add_checkpoint(checkpoint)

    def remove_files(self, folder: str) -> None:
        """Remove a checkpoint folder: the local copy and the shared one."""
        files.remove(Path(folder))
        self.storage.remove(folder)

    def newest_training_checkpoint(self, run_id: str) -> Checkpoint | None:
        """The training checkpoint written last (not the highest step: after a Tinker
        `load_weights` of an earlier state, the newest one holds that state) whose files can
        be read; `Unavailable` when the run has recorded ones but none can be read."""
        recorded = self.store.list_checkpoints(run_id, "training")
        saved = [c for c in recorded if self.storage.exists(c.path)]
        if recorded and not saved:
            # Files are written before their record, so a run whose every recorded checkpoint
            # is missing is one whose storage is not reachable (not mounted, a moved data
            # folder): resuming it fresh would throw its training away. It waits instead.
            raise Unavailable(
                f"run {run_id}: none of its {len(recorded)} training checkpoints can be read "
                f"(newest: {max(recorded, key=lambda c: c.created_at).path}); is the "
                "checkpoint storage reachable? The run keeps its history and resumes once "
                "they can be read",
                retry_after=30,
            )
        return max(saved, key=lambda c: c.created_at, default=None)

    def prune_sampler_steps(self, run_id: str, current: int) -> None:
        """Remove the per-step sampler weights the retention policy does not keep."""
        sampler = self.store.list_checkpoints(run_id, "sampler")
        keep = files.kept_steps(
            [c.step for c in sampler],
            current,
            self.settings.sampler_keep_last,
            self.settings.sampler_keep_every,
        )
        for checkpoint in sampler:
            if checkpoint.step not in keep:
                self.remove_files(checkpoint.path)
                self.store.delete_checkpoint(checkpoint.id)

    def prune_automatic_checkpoints(self, run_id: str) -> int:
        """Keep the newest `keep_auto_checkpoints` automatic training checkpoints."""
        return cleanup.prune_automatic_checkpoints(
            self.store, run_id, self.settings.keep_auto_checkpoints, self.storage
        )

    def drop_history_after(self, run_id: str, step: int) -> None:
        """The run restarts at `step`: its step, metrics and later sampler weights follow (a
        gradient not applied yet is forgotten)."""
        self._pending_loss.pop(run_id, None)
        self.store.update_run(run_id, step=step)
        self.store.delete_metrics_after(run_id, step)
        for checkpoint in self.store.list_checkpoints(run_id, "sampler"):
            if checkpoint.step > step:
                self.remove_files(checkpoint.path)
                self.store.delete_checkpoint(checkpoint.id)

    def restart_history_at(self, run_id: str, step: int, steps_folder: Path) -> None:
        """After weights were loaded into a run at `step`: the run's step, metrics and
        per-step sampler weights restart there (`steps_folder` holds the loaded weights)."""
        self.drop_history_after(run_id, step)
        for checkpoint in self.store.list_checkpoints(run_id, "sampler"):
            if checkpoint.step == step:
                self.store.delete_checkpoint(checkpoint.id)
        self.record_checkpoint(run_id, "sampler", step, steps_folder)

    def kept_steps(self, tenant_id: str, run_id: str) -> list[int]:
        """The steps whose sampler weights are kept (those a caller may sample)."""
        self.run_row(tenant_id, run_id)
        return sorted({c.step for c in self.store.list_checkpoints(run_id, "sampler")})

    def sampler_path(self, run_id: str, step: int) -> str:
        """The local folder of a kept step's sampler weights (NotFound naming the kept ones)."""
        for checkpoint in self.store.list_checkpoints(run_id, "sampler"):
            if checkpoint.step == step and self.storage.exists(checkpoint.path):
                return self.storage.local(checkpoint.path)
        kept = sorted({c.step for c in self.store.list_checkpoints(run_id, "sampler")})
        raise NotFound(
            f"step {step} of run {run_id!r} is not kept; kept steps: {kept} (policy: step 0, "
            f"the last {self.settings.sampler_keep_last} steps and every "
            f"{self.settings.sampler_keep_every}th step)"
        )

    def checkpoint(self, tenant_id: str, run_id: str, checkpoint_id: str) -> Checkpoint:
        """A checkpoint of this tenant's run, its path made local (downloaded if shared)."""
        self.run_row(tenant_id, run_id)
        checkpoint = self.store.get_checkpoint(checkpoint_id)
        if checkpoint is None or not self.storage.exists(checkpoint.path):
            raise NotFound(f"run {run_id!r} has no checkpoint {checkpoint_id!r}")
        if checkpoint.run_id != run_id:
            raise NotFound(f"run {run_id!r} has no checkpoint {checkpoint_id!r}")
        checkpoint.path = self.storage.local(checkpoint.path)  # a detached row: this copy
        return checkpoint
