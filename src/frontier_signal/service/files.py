"""Checkpoint files in the data folder: where they live, their digest, archives, retention.

Layout under `<data_dir>/runs/<run_id>/`:
- `checkpoints/<checkpoint_id>/`: training checkpoints (adapter + optimizer + step) and merged
  exports, written atomically by the engine.
- `steps/step-<N>/`: sampler weights of step N (adapter only), for `inference(step=N)`.

`stray_folders` finds what a crash can leave there: half-written `.<name>.tmp-*` /
`.<name>.old-*` folders of an atomic write, and folders no checkpoint row records.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from frontier_signal.service.errors import InvalidRequest

# The longest checkpoint TTL (ten years): later expiry dates are not representable everywhere.
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
# Names of the training checkpoints the server writes by itself (pruned by policy).
AUTOMATIC_CHECKPOINTS = ("auto-step-", "shutdown-step-", "unload-step-")


def run_folder(data_dir: Path, run_id: str) -> Path:
    return data_dir / "runs" / run_id


def checkpoint_folder(data_dir: Path, run_id: str, checkpoint_id: str) -> Path:
    return run_folder(data_dir, run_id) / "checkpoints" / checkpoint_id


def step_folder(data_dir: Path, run_id: str, step: int) -> Path:
    return run_folder(data_dir, run_id) / "steps" / f"step-{step:06d}"


def step_folder_template(data_dir: Path, run_id: str) -> str:
    """`step_folder` with the step left as `{step}`, for an engine operation that learns the
    step as it runs (`engine.operations.fill_step` writes it with the same six digits)."""
    return str(run_folder(data_dir, run_id) / "steps" / "step-{step}")


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


def check_repo_id(repo_id: str) -> None:
    """Raises InvalidRequest unless `repo_id` is a Hub repo id ('user/name', the Hub's rules):
    a malformed id is the caller's mistake (400), not the Hub failing (502)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("it must be 'user/name'")
    except HFValidationError as exc:
        raise InvalidRequest(f"hub_model_id {repo_id!r} is not a Hub repo id: {exc}") from None


def push_to_hub(folder: Path, repo_id: str) -> str:
    """Upload a folder to the Hugging Face Hub (`HF_TOKEN` / `HF_ENDPOINT` from the
    environment); returns the commit URL."""
    from huggingface_hub import HfApi  # only needed on this path

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    return str(commit)


def stray_folders(data_dir: Path, recorded: set[str], runs: set[str]) -> list[Path]:
    """Folders under `<data_dir>/runs` that nothing refers to: a run folder of no run,
    temporary folders of interrupted atomic writes, and checkpoint or step folders whose path
    no checkpoint row records (a crash between writing the files and recording them)."""
    stray: list[Path] = []
    root = data_dir / "runs"
    if not root.is_dir():
        return stray
    # Compared by (run, section, name): the data folder may have moved since it was recorded.
    recorded_names = {Path(p).parts[-3:] for p in recorded}
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        if run.name not in runs:
            stray.append(run)
            continue
        for section in ("checkpoints", "steps"):
            folder = run / section
            if folder.is_dir():
                stray.extend(
                    child
                    for child in sorted(folder.iterdir())
                    if child.is_dir() and (run.name, section, child.name) not in recorded_names
                )
    return stray
