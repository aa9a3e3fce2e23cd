"""How the Tinker face names checkpoints: `hpcai://` / `tinker://` paths and REST ids.

Checkpoints handed out are `hpcai://{run}/training/{name}` (kind `training` in the store: adapter
+ optimizer + step) and `hpcai://{run}/sampler/{name}` (kind `sampler_weights`: adapter only;
the Signal face's per-step `sampler` weights are internal and never named here). tinker spells
the segments `weights` / `sampler_weights`, and `save_weights_external` makes kind `external`
(`tinker://{run}/external_weights/{name}`). This module parses and builds those names only: it
reads no store and no file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.tables import Checkpoint

SCHEMES = ("hpcai://", "tinker://")
# Wire segment → store kind. `weights` / `sampler_weights` are tinker's spellings.
SEGMENTS = {
    "training": "training",
    "weights": "training",
    "sampler": "sampler_weights",
    "sampler_weights": "sampler_weights",
    "external": "external",
    "external_weights": "external",
}
WIRE_TYPE = {"training": "training", "sampler_weights": "sampler", "external": "external"}
TINKER_SEGMENT = {
    "training": "weights",
    "sampler_weights": "sampler_weights",
    "external": "external_weights",
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)*$")


@dataclass
class CheckpointRef:
    """A parsed checkpoint path: run id, store kind (None: either) and name."""

    run_id: str
    kind: str | None
    name: str


def parse_path(path: str) -> CheckpointRef:
    """Parse `hpcai://run/training/name` and its synonyms (`tinker://`, `weights`,
    `sampler_weights`, SkyRL's two-part `tinker://run/name` for sampler weights).

    Raises:
        InvalidRequest: a path of neither form.
    """
    rest = path
    for scheme in SCHEMES:
        if path.startswith(scheme):
            rest = path[len(scheme) :]
            break
    parts = rest.split("/")
    if len(parts) >= 3 and parts[1] in SEGMENTS and parts[0] and parts[2]:
        return CheckpointRef(parts[0], SEGMENTS[parts[1]], "/".join(parts[2:]))
    if len(parts) == 2 and rest != path and all(parts):
        return CheckpointRef(parts[0], "sampler_weights", parts[1])
    raise InvalidRequest(
        f"{path!r} is not a checkpoint path; expected 'hpcai://RUN_ID/training/NAME' or "
        "'hpcai://RUN_ID/sampler/NAME' (tinker:// and weights / sampler_weights also work)"
    )


def checkpoint_path(row: Checkpoint, scheme: str = "hpcai://") -> str:
    """The path a checkpoint is handed out as, in `scheme` (each has its segment names)."""
    segment = WIRE_TYPE[row.kind] if scheme == "hpcai://" else TINKER_SEGMENT[row.kind]
    return f"{scheme}{row.run_id}/{segment}/{row.name}"


def split_id(checkpoint_id: str) -> tuple[str, str | None]:
    """REST checkpoint id → (name, store kind or None for a bare name)."""
    head, _, rest = checkpoint_id.partition("/")
    if rest and head in SEGMENTS:
        return rest, SEGMENTS[head]
    return checkpoint_id, None


def check_name(name: str) -> None:
    """InvalidRequest for a checkpoint name that could leave its folder or break a path."""
    if not NAME.match(name) or ".." in name:
        raise InvalidRequest(
            f"checkpoint name {name!r}: use letters, digits, '_', '-', '.' (and '/' between parts)"
        )
