"""The Tinker face's checkpoints: save, load, find, list, expire, share and sign them.

`TinkerCheckpoints` is the checkpoint half of `TinkerService` (its base class). Checkpoints are
the Signal face's own rows (kinds `training`, `sampler_weights`, `external`: `tinker_paths.py`
names them); a checkpoint is readable by its run's tenant, or by anyone once it is public, and
never after its TTL. Files of a checkpoint are downloaded one by one through signed URLs
(`signing.py`). Answers are store rows and small result types; the Tinker schema renders them.
It knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from frontier_signal.engine import operations as ops
from frontier_signal.engine.types import CheckpointKind
from frontier_signal.service import files
from frontier_signal.service.errors import InvalidRequest, NotFound
from frontier_signal.service.run_spec import spec_columns
from frontier_signal.service.runs import RunService
from frontier_signal.service.signing import DEFAULT_EXPIRY_SECONDS, UrlSigner
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import Checkpoint, Run
from frontier_signal.service.tinker_paths import (
    SEGMENTS,
    WIRE_TYPE,
    check_name,
    checkpoint_path,
    parse_path,
    split_id,
)

# Name of the training checkpoint a run gets of itself right after `load_weights`.
LOADED_PREFIX = "loaded-step-"


@dataclass(frozen=True)
class SignedUrls:
    """One signed URL per file of a checkpoint (relative path → URL), valid until `expires`
    (UNIX seconds)."""

    urls: dict[str, str]
    expires: float


def _check_ttl(ttl_seconds: int | None, nullable: str = "") -> None:
    if ttl_seconds is not None and not 0 < ttl_seconds <= files.MAX_TTL_SECONDS:
        raise InvalidRequest(
            f"ttl_seconds must be a number of seconds in [1, {files.MAX_TTL_SECONDS}]{nullable}"
        )


class TinkerCheckpoints:
    """Tinker checkpoints over the run service's files and the store."""

    runs: RunService
    store: Store
    clock: Callable[[], float]
    signer: UrlSigner

    def model_row(self, tenant_id: str, model_id: str) -> Run:
        """This tenant's model (NotFound for another tenant's)."""
        return self.runs.run_row(tenant_id, model_id)

    # ----- save and load -------------------------------------------------------------------
    async def save_weights(
        self,
        tenant_id: str,
        model_id: str,
        name: str | None,
        wire_type: str,
        overwrite: bool,
        ttl_seconds: int | None = None,
        scheme: str = "hpcai://",
    ) -> str:
        """Save a `training` or `sampler` checkpoint under `name` (expiring after `ttl_seconds`
        when given); returns its path in `scheme` (hpcai:// or tinker://)."""
        checkpoint = await self.save_checkpoint(
            tenant_id, model_id, name, wire_type, overwrite, ttl_seconds
        )
        return checkpoint_path(checkpoint, scheme)

    async def save_checkpoint(
        self,
        tenant_id: str,
        model_id: str,
        name: str | None,
        wire_type: str,
        overwrite: bool,
        ttl_seconds: int | None = None,
    ) -> Checkpoint:
        """Save a `training`, `sampler` or `external` (adapter only) checkpoint; its row."""
        _check_ttl(ttl_seconds)
        row = await asyncio.to_thread(self.model_row, tenant_id, model_id)
        await self.runs.ensure_loaded(row)
        kind = SEGMENTS[wire_type]
        if not name:
            row = await asyncio.to_thread(self.model_row, tenant_id, model_id)  # its step now
            name = f"step_{row.step:06d}_{new_id('ckpt')[5:13]}"
        check_name(name)
        listed = await asyncio.to_thread(self.store.list_checkpoints, model_id, kind)
        existing = [c for c in listed if c.name == name]
        if existing and not overwrite:
            raise InvalidRequest(
                f"run {model_id!r} already has a {wire_type} checkpoint named {name!r}; "
                "choose another name"
            )
        checkpoint_id = new_id("ckpt")
        folder = files.checkpoint_folder(self.runs.data_dir, model_id, checkpoint_id)
        engine_kind: CheckpointKind = "training" if kind == "training" else "sampler"
        saved = await self.runs.save_checkpoint(model_id, folder, engine_kind)
        checkpoint = await asyncio.to_thread(
            self.runs.record_checkpoint, model_id, kind, saved.step, folder, checkpoint_id, name
        )
        if ttl_seconds is not None:
            checkpoint.expires_at = checkpoint.created_at + ttl_seconds
            expires_at = checkpoint.expires_at
            await asyncio.to_thread(
                self.store.update_checkpoint, checkpoint.id, expires_at=expires_at
            )
        for old in existing:
            await asyncio.to_thread(self._remove, old)
        return checkpoint

    async def load_weights(
        self, tenant_id: str, model_id: str, path: str, with_optimizer: bool
    ) -> None:
        """Load a checkpoint (of any run of this tenant) into this run; the adapter layout and
        the step come from the checkpoint. A sampler checkpoint loads weights only."""
        row = await asyncio.to_thread(self.model_row, tenant_id, model_id)
        checkpoint = await asyncio.to_thread(self.resolve, tenant_id, path)
        await self.runs.ensure_loaded(row)
        checkpoint_id = new_id("ckpt")
        training = files.checkpoint_folder(self.runs.data_dir, model_id, checkpoint_id)
        info = await self._load(row, checkpoint, with_optimizer, training)
        assert info.sampler is not None, "the load named a sampler folder: the engine writes it"
        sampler = Path(info.sampler.folder)
        await asyncio.to_thread(self.runs.restart_history_at, model_id, info.step, sampler)
        listed = await asyncio.to_thread(self.store.list_checkpoints, model_id, "training")
        previous = [c for c in listed if c.name.startswith(LOADED_PREFIX)]
        name = f"{LOADED_PREFIX}{info.step}"
        await asyncio.to_thread(
            self.runs.record_checkpoint,
            model_id,
            "training",
            info.step,
            training,
            checkpoint_id,
            name,
        )
        for old in previous:  # only the newest server-made copy is worth keeping
            await asyncio.to_thread(self._remove, old)

    async def _load(
        self, row: Run, checkpoint: Checkpoint, with_optimizer: bool, training: Path
    ) -> ops.CheckpointLoaded:
        """Load the checkpoint in the engine, which then writes the loaded weights as this
        step's sampler weights and the run's own training copy (restarts resume the loaded
        state, not an older, later step); the checkpoint's adapter layout becomes the run's."""
        source = await asyncio.to_thread(self.runs.storage.local, checkpoint.path)
        op = ops.LoadCheckpoint(
            row.id,
            source,
            with_optimizer,
            sampler_folder=files.step_folder_template(self.runs.data_dir, row.id),
            training_folder=str(training),
        )
        info: ops.CheckpointLoaded = await self.runs.submit(op, row.id)
        lora = info.config.lora
        loaded = replace(
            row.spec,
            lora_rank=lora.rank,
            lora_alpha=lora.alpha,
            target_modules=tuple(lora.target_modules),
            requested_target_modules=tuple(lora.target_modules),
        )
        await asyncio.to_thread(self.store.update_run, row.id, **spec_columns(loaded))
        return info

    # ----- find and list -------------------------------------------------------------------
    def resolve(self, tenant_id: str, path: str) -> Checkpoint:
        """The checkpoint a path names, if its run belongs to this tenant or it is public."""
        ref = parse_path(path)
        return self._readable(tenant_id, ref.run_id, ref.name, ref.kind)

    def _readable(self, tenant_id: str, run_id: str, name: str, kind: str | None) -> Checkpoint:
        """This tenant's checkpoint, or another tenant's public one (else NotFound)."""
        run = self.store.get_run(run_id)
        if run is not None and run.tenant_id != tenant_id and run.status == "active":
            with contextlib.suppress(NotFound):
                checkpoint = self.find_checkpoint(run.tenant_id, run_id, name, kind)
                if checkpoint.public:
                    return checkpoint
        return self.find_checkpoint(tenant_id, run_id, name, kind)

    def find_checkpoint(
        self, tenant_id: str, run_id: str, name: str, kind: str | None = None
    ) -> Checkpoint:
        """By name (or checkpoint id); with no kind, a training checkpoint first."""
        self.runs.run_row(tenant_id, run_id)
        for wanted in [kind] if kind else ["training", "sampler_weights"]:
            matches = [
                c
                for c in self.store.list_checkpoints(run_id, wanted)
                if (c.name == name or c.id == name)
                and self.runs.storage.exists(c.path)
                and not self._expired(c)
            ]
            if matches:
                return max(matches, key=lambda c: c.created_at)
        what = WIRE_TYPE.get(kind or "", "training or sampler")
        raise NotFound(f"run {run_id!r} has no {what} checkpoint named {name!r}")

    def checkpoint_by_id(self, tenant_id: str, run_id: str, checkpoint_id: str) -> Checkpoint:
        """A checkpoint named as in REST paths: `weights/NAME`, `sampler_weights/NAME`,
        `external_weights/NAME` (tinker), or a bare name (hpcai; a training checkpoint first)."""
        return self.find_checkpoint(tenant_id, run_id, *split_id(checkpoint_id))

    def list_checkpoints(
        self, tenant_id: str, run_id: str, tinker_ids: bool = False
    ) -> list[Checkpoint]:
        """Listed for tinker (`tinker_ids`): every kind; for hpcai: no `external` ones (its
        types know only `training` / `sampler`). Oldest first."""
        self.runs.run_row(tenant_id, run_id)
        return [c for c in self.listed(run_id) if tinker_ids or c.kind != "external"]

    def listed(self, run_id: str) -> list[Checkpoint]:
        """The run's Tinker checkpoints not expired, oldest first."""
        rows = [
            c
            for c in self.store.list_checkpoints(run_id)
            if c.kind in WIRE_TYPE and not self._expired(c)
        ]
        return sorted(rows, key=lambda c: c.created_at)

    # ----- expiry, sharing, deletion -------------------------------------------------------
    def _expired(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.expires_at is not None and checkpoint.expires_at <= self.clock()

    def sweep_expired_checkpoints(self) -> int:
        """Delete the files and rows of checkpoints past their TTL; returns how many."""
        expired = self.store.expired_checkpoints(self.clock())
        for checkpoint in expired:
            self._remove(checkpoint)
        return len(expired)

    def set_public(self, tenant_id: str, run_id: str, checkpoint_id: str, public: bool) -> None:
        """Let any tenant read the checkpoint (or only its own tenant again)."""
        checkpoint = self.checkpoint_by_id(tenant_id, run_id, checkpoint_id)
        self.store.update_checkpoint(checkpoint.id, public=public)

    def set_ttl(self, tenant_id: str, run_id: str, checkpoint_id: str, ttl: int | None) -> None:
        """Expire the checkpoint `ttl` seconds from now (None: keep it for good)."""
        _check_ttl(ttl, ", or null")
        checkpoint = self.checkpoint_by_id(tenant_id, run_id, checkpoint_id)
        expires_at = None if ttl is None else self.clock() + ttl
        self.store.update_checkpoint(checkpoint.id, expires_at=expires_at)

    def delete_checkpoint(self, tenant_id: str, run_id: str, checkpoint_id: str) -> None:
        """Remove the checkpoint's files and row."""
        self._remove(self.checkpoint_by_id(tenant_id, run_id, checkpoint_id))

    def _remove(self, checkpoint: Checkpoint) -> None:
        self.runs.remove_files(checkpoint.path)
        self.store.delete_checkpoint(checkpoint.id)

    # ----- downloads: signed per-file URLs -------------------------------------------------
    def external_weights_urls(
        self,
        tenant_id: str,
        run_id: str,
        checkpoint_id: str,
        base_url: str,
        seconds: int = DEFAULT_EXPIRY_SECONDS,
    ) -> SignedUrls:
        """A signed URL for every file of a checkpoint this tenant may read (its own, or a
        public one). A URL needs no API key and grants one file."""
        name, kind = split_id(checkpoint_id)
        checkpoint = self._readable(tenant_id, run_id, name, kind)
        folder = Path(self.runs.storage.local(checkpoint.path))
        expires = self.signer.expiry(seconds)
        urls = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relpath = path.relative_to(folder).as_posix()
            signature = self.signer.signature(checkpoint.id, relpath, expires)
            urls[relpath] = (
                f"{base_url.rstrip('/')}/api/v1/checkpoint_files/{checkpoint.id}/{quote(relpath)}"
                f"?expires={expires}&signature={signature}"
            )
        return SignedUrls(urls, expires)

    def signed_file(self, checkpoint_id: str, relpath: str, expires: str, signature: str) -> Path:
        """The file a signed URL names, after its signature and expiry are checked (403), if
        the checkpoint still exists (404). The path never leaves the checkpoint's folder."""
        self.signer.check(checkpoint_id, relpath, expires, signature)
        checkpoint = self.store.get_checkpoint(checkpoint_id)
        if checkpoint is None or self._expired(checkpoint):
            raise NotFound(f"checkpoint {checkpoint_id!r} no longer exists")
        folder = Path(self.runs.storage.local(checkpoint.path)).resolve()
        path = (folder / relpath).resolve()
        if not path.is_relative_to(folder) or not path.is_file():
            raise NotFound(f"checkpoint {checkpoint_id!r} has no file {relpath!r}")
        return path
