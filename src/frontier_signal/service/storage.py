"""Shared checkpoint storage: checkpoints, sampler steps and exports published to a storage URL
(`FRONTIER_SIGNAL_STORAGE_URL`, through fsspec), so server processes with their own data
folders, on one machine or several, load what another wrote.

The engine always writes and reads local folders (torch loads files): the data folder is the
local copy. With no storage URL (the default) it is the only copy and nothing here does any
work. With one, `publish` copies a folder the engine wrote to `<url>/runs/<run>/<section>/<name>`
before its checkpoint row is recorded, and `local` gives the local copy of a recorded folder,
downloading it first when this process has none (another process wrote it).

A reader never sees a half-written folder (docs/storage.md):
- local paths and `file://` (a shared disk, NFS): the files go to a temporary sibling folder,
  then one rename publishes it;
- object stores (`s3://` with s3fs, `memory://`, ...), which have no rename: the files first,
  then `.frontier-signal-manifest.json` (names, sizes, sha256) last. On every backend a folder
  without its manifest is not there, and a download is checked against the manifest.
It does not decide what is kept (service/cleanup.py) nor who may read what (the services).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

MANIFEST = ".frontier-signal-manifest.json"


class StorageError(RuntimeError):
    """A published folder that cannot be read back intact."""


def _key(folder: str | Path) -> str:
    """`runs/<run>/<section>/<name>` of a checkpoint folder, wherever its data folder was."""
    parts = Path(folder).parts[-4:]
    if len(parts) != 4 or parts[0] != "runs":
        raise ValueError(f"{folder} is not a checkpoint folder under <data_dir>/runs/")
    return "/".join(parts)


def _manifest(folder: Path) -> dict:
    entries = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        entries[path.relative_to(folder).as_posix()] = [path.stat().st_size, digest.hexdigest()]
    return {"version": 1, "files": entries}


class CheckpointStorage:
    """Where checkpoint folders are shared. `url` "" (or the data folder itself): local only."""

    def __init__(self, url: str, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.url = url.rstrip("/")
        self.fs: AbstractFileSystem | None = None
        self.root = ""
        if self.url:
            import fsspec  # only with a storage URL

            self.fs, self.root = fsspec.core.url_to_fs(self.url)
            self.root = self.root.rstrip("/")
            if self.is_local and Path(self.root).resolve() == self.data_dir.resolve():
                self.fs = None  # the data folder itself: nothing to share
        self.shared = self.fs is not None

    @property
    def _shared_fs(self) -> AbstractFileSystem:
        """The storage's filesystem, for the paths that only run when storage is shared."""
        if self.fs is None:
            raise RuntimeError("checkpoint storage is not shared (no storage URL)")
        return self.fs

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol if self.fs is not None else "file"
        return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))

    def uri(self, folder: Path) -> str:
        """The URI a caller is given for a folder: `file://` of the local copy by default, the
        storage URL when storage is shared (contract-notes, save_state)."""
        if not self.shared:
            return Path(folder).resolve().as_uri()
        return self._shared_fs.unstrip_protocol(f"{self.root}/{_key(folder)}")

    # ----- writing ---------------------------------------------------------------------------
    def publish(self, folder: Path) -> None:
        """Copy a folder the engine wrote to the storage, atomically for readers."""
        if not self.shared:
            return
        target = f"{self.root}/{_key(folder)}"
        manifest = _manifest(Path(folder))
        if self.is_local:
            self._publish_by_rename(Path(folder), Path(target), manifest)
        else:
            self._publish_with_manifest(Path(folder), target, manifest)

    def _publish_by_rename(self, folder: Path, target: Path, manifest: dict) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            for name in manifest["files"]:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, tmp / name)
            (tmp / MANIFEST).write_text(json.dumps(manifest))
            for path in tmp.rglob("*"):
                if path.is_file():
                    with path.open("rb") as handle:
                        os.fsync(handle.fileno())
            tmp.chmod(0o755)
            if target.exists():  # a step folder written again (after a restore)
                old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _publish_with_manifest(self, folder: Path, target: str, manifest: dict) -> None:
        fs = self._shared_fs
        if fs.exists(f"{target}/{MANIFEST}"):
            fs.rm_file(f"{target}/{MANIFEST}")  # withdrawn while its files change
        for name in manifest["files"]:
            fs.makedirs(f"{target}/{name}".rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(folder / name), f"{target}/{name}")
        with fs.open(f"{target}/{MANIFEST}", "w") as handle:
            handle.write(json.dumps(manifest))

    def remove(self, folder: str | Path) -> None:
        """Remove the shared copy of a folder (the manifest first: readers stop trusting it)."""
        if not self.shared:
            return
        fs, target = self._shared_fs, f"{self.root}/{_key(folder)}"
        try:
            if fs.exists(f"{target}/{MANIFEST}"):
                fs.rm_file(f"{target}/{MANIFEST}")
            if fs.exists(target):
                fs.rm(target, recursive=True)
        except FileNotFoundError:
            pass

    # ----- reading ---------------------------------------------------------------------------
    def exists(self, folder: str | Path) -> bool:
        """Whether a recorded folder can be read here (a local copy, or a published one)."""
        if not self.shared:
            return Path(folder).is_dir()
        if self._local_copy(folder).is_dir():
            return True
        return self._shared_fs.exists(f"{self.root}/{_key(folder)}/{MANIFEST}")

    def local(self, folder: str | Path) -> str:
        """The local copy of a recorded folder, downloaded first if this process has none.
        Without shared storage (or for a folder that is nowhere) the path as recorded."""
        if not self.shared:
            return str(folder)
        local = self._local_copy(folder)
        if local.is_dir():
            return str(local)
        source = f"{self.root}/{_key(folder)}"
        for attempt in range(3):  # a folder rewritten while read is read again
            try:
                with self._shared_fs.open(f"{source}/{MANIFEST}") as handle:
                    manifest = json.loads(handle.read())
                self._download(source, local, manifest)
                return str(local)
            except FileNotFoundError:
                if not self._shared_fs.exists(source):
                    return str(folder)  # never published: the path as recorded
                # Files without their manifest: being rewritten right now.
                if attempt == 2:
                    raise StorageError(
                        f"{source} is being rewritten (no manifest yet); retry the request"
                    ) from None
            except StorageError:
                if attempt == 2:
                    raise
            time.sleep(0.05 * (attempt + 1))
        return str(local)  # pragma: no cover - the loop returns or raises

    def _local_copy(self, folder: str | Path) -> Path:
        try:
            return self.data_dir / _key(folder)
        except ValueError:
            return Path(folder)

    def _download(self, source: str, local: Path, manifest: dict) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.tmp-", dir=local.parent))
        try:
            for name in manifest["files"]:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                # Replaced while read: the check below refuses the copy.
                with contextlib.suppress(FileNotFoundError):
                    self._shared_fs.get_file(f"{source}/{name}", str(tmp / name))
            if _manifest(tmp)["files"] != manifest["files"]:
                raise StorageError(
                    f"{source} changed while it was read (its files do not match its manifest); "
                    "retry the request"
                )
            try:
                os.replace(tmp, local)
            except OSError:  # another request of this process downloaded it first
                if not local.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
