"""Checkpoint files in the data folder: where they live, their digest, archives, retention.

Layout under `<data_dir>/runs/<run_id>/`:
- `checkpoints/<checkpoint_id>/`: training checkpoints (adapter + optimizer + step) and merged
  exports, written atomically by the engine.
- `steps/step-<N>/`: sampler weights of step N (adapter only), for `inference(step=N)`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path


def run_folder(data_dir: Path, run_id: str) -> Path:
    return data_dir / "runs" / run_id


def checkpoint_folder(data_dir: Path, run_id: str, checkpoint_id: str) -> Path:
    return run_folder(data_dir, run_id) / "checkpoints" / checkpoint_id


def step_folder(data_dir: Path, run_id: str, step: int) -> Path:
    return run_folder(data_dir, run_id) / "steps" / f"step-{step:06d}"


def folder_digest(folder: Path) -> tuple[int, str]:
    """(total bytes, sha256 over every file's relative path and contents, in sorted order)."""
    digest, size = hashlib.sha256(), 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def file_sizes(folder: Path) -> dict[str, int]:
    """{file name: size in bytes} of the files directly in a folder."""
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def archive(folder: Path, name: str) -> Path:
    """The folder as a temporary `.tar.gz` (the caller deletes it)."""
    descriptor, path = tempfile.mkstemp(prefix="frontier-signal-", suffix=".tar.gz")
    os.close(descriptor)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=name)
    return Path(path)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def kept_steps(steps: list[int], current: int, keep_last: int, keep_every: int) -> set[int]:
    """Sampler-weights retention: step 0, the last `keep_last` steps, and every
    `keep_every`-th step (0 disables that rule)."""
    return {
        s
        for s in steps
        if s == 0 or s > current - keep_last or (keep_every > 0 and s % keep_every == 0)
    }


def push_to_hub(folder: Path, repo_id: str) -> str:
    """Upload a folder to the Hugging Face Hub (`HF_TOKEN` / `HF_ENDPOINT` from the
    environment); returns the commit URL."""
    from huggingface_hub import HfApi  # only needed on this path

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    return str(commit)
