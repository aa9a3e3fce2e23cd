"""The Tinker face's rules on top of `RunService`: one run = one Tinker "model".

Tinker semantics differ from the Signal face on purpose (contract notes): losses are summed over
tokens, gradients accumulate over every forward_backward until `optim_step`, and each step takes
its full AdamParams (weight decay and clipping 0 unless sent). Runs, checkpoints and tenants are
the Signal face's own rows, so a run made here is listed there and the reverse.

Checkpoints handed out are `hpcai://{run}/training/{name}` (kind `training` in the store: adapter
+ optimizer + step) and `hpcai://{run}/sampler/{name}` (kind `sampler_weights`: adapter only;
the Signal face's per-step `sampler` weights are internal and not listed here). tinker's
`save_weights_external` makes kind `external` (`tinker://{run}/external_weights/{name}`: the PEFT
adapter, no optimizer), which is downloaded file by file through signed URLs (`signing.py`) and
left out of listings served to hpcai (its types know only `training` / `sampler`). It knows
nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from frontier_signal.engine import operations as ops
from frontier_signal.engine.types import (
    Datum,
    ForwardBackwardResult,
    SampleResult,
    SamplingParams,
)
from frontier_signal.service import files
from frontier_signal.service.errors import InvalidRequest, NotFound
from frontier_signal.service.run_spec import RunSpec, spec_columns
from frontier_signal.service.runs import RunService
from frontier_signal.service.sampling import sample_requests
from frontier_signal.service.signing import DEFAULT_EXPIRY_SECONDS, UrlSigner
from frontier_signal.service.store import new_id
from frontier_signal.service.tables import Checkpoint, Run

LATEST_DATE = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
# Name of the training checkpoint a run gets of itself right after `load_weights`.
LOADED_PREFIX = "loaded-step-"
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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)*$")


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
    segment = WIRE_TYPE[row.kind] if scheme == "hpcai://" else TINKER_SEGMENT[row.kind]
    return f"{scheme}{row.run_id}/{segment}/{row.name}"


def iso(seconds: float) -> str:
    # Clamped: a date past year 9999 (an unbounded TTL stored by an older version) must not
    # break every listing that shows it.
    return datetime.fromtimestamp(min(seconds, LATEST_DATE), UTC).isoformat()


def checkpoint_info(row: Checkpoint, tinker_ids: bool = False) -> dict:
    """A Checkpoint as hpcai reads it (plus tinker's `tinker_path`, `size_bytes`, `public`,
    `expires_at`); for tinker clients the id carries the type segment (`weights/NAME`)."""
    return {
        "checkpoint_id": f"{TINKER_SEGMENT[row.kind]}/{row.name}" if tinker_ids else row.name,
        "checkpoint_type": WIRE_TYPE[row.kind],
        "time": iso(row.created_at),
        "checkpoint_path": checkpoint_path(row),
        "tinker_path": checkpoint_path(row, "tinker://"),
        "size_bytes": row.size,
        "public": bool(row.public),
        "expires_at": iso(row.expires_at) if row.expires_at is not None else None,
    }


def _split_id(checkpoint_id: str) -> tuple[str, str | None]:
    """REST checkpoint id → (name, store kind or None for a bare name)."""
    head, _, rest = checkpoint_id.partition("/")
    if rest and head in SEGMENTS:
        return rest, SEGMENTS[head]
    return checkpoint_id, None


class TinkerService:
    """Tinker operations over the run service (runs, files) and its engine worker."""

    def __init__(self, runs: RunService, clock=time.time):
        self.runs = runs
        self.clock = clock
        # Flags handed to tinker SDKs (tests flip them to drive both code paths).
        self.compress_fwdbwd = True
        self.use_pyqwest_transport = True
        self.store = runs.store
        self.signer = UrlSigner(Path(runs.data_dir))

    # ----- the tinker SDK's start-up flags -------------------------------------------------
    def client_flags(self) -> dict:
        """`/client/config`: every flag stated, each one this server honours as stated."""
        return {
            "pjwt_auth_enabled": False,  # no JWT exchange: X-API-Key on every call
            "credential_default_source": "api_key",
            "parallel_fwdbwd_chunks": True,  # ordered by seq_id on arrival
            "proto_compress_fwdbwd": self.compress_fwdbwd,  # zstd bodies are decompressed
            "fwdbwd_max_chunk_len": 1024,
            "fwdbwd_max_chunk_bytes_count": 5_000_000,
            "use_pyqwest_transport": self.use_pyqwest_transport,
            "sample_no_retries": False,
            "sample_use_retrieve_futures": False,  # no /retrieve_futures here
            "custom_loss_server_side": False,  # custom losses run client-side
            "sample_join_sampling_session": False,  # no /join_sampling_session here
        }

    def client_dynamic_flags(self) -> dict:
        """`/client/dynamic_config`: `/cancel_future` exists, so explicit cancels are on."""
        return {
            "refresh_interval_sec": 300,
            "sample_cancel_enabled": True,
            "sample_cancel_max_batch_size": 64,
        }

    # ----- models --------------------------------------------------------------------------
    def check_base_model(self, base_model: str) -> None:
        self.runs.check_base_model(base_model)

    def supported_models(self) -> list[str]:
        return self.runs.base_models()

    async def create_model(self, spec: RunSpec, run_id: str | None = None) -> Run:
        """A new run of `spec` (built by the Tinker schema). Models of a tinker session get the
        id `{session_id}:train:{model_seq_id}` (`run_id`)."""
        return await self.runs.create_run(spec, run_id)

    async def check_memory(self, spec: RunSpec) -> None:
        """Refuse at once (4xx) a model that would not fit the memory budget (admission.py)."""
        self.check_base_model(spec.base_model)
        await self.runs.check_memory(spec)

    def model_row(self, tenant_id: str, model_id: str) -> Run:
        return self.runs.run_row(tenant_id, model_id)

    def model_spec(self, tenant_id: str, model_id: str) -> RunSpec:
        """The RunSpec of this tenant's model (NotFound for another tenant's)."""
        return self.model_row(tenant_id, model_id).spec

    def checkpoint_spec(self, tenant_id: str, path: str) -> RunSpec:
        """The RunSpec of the run a checkpoint this tenant may read belongs to."""
        return self.store.get_run(self.resolve(tenant_id, path).run_id).spec

    def get_info(self, tenant_id: str, model_id: str) -> dict:
        row = self.model_row(tenant_id, model_id)
        rank = row.spec.lora_rank
        return {
            "type": "get_info",
            "model_id": row.id,
            "model_data": {
                "model_name": row.base_model,
                "arch": "llama",
                "tokenizer_id": row.base_model,
            },
            "is_lora": True,
            "lora_rank": rank,
            "model_name": row.base_model,
            "optimizer_config": {"type": "adamw"},
        }

    def weights_info(self, tenant_id: str, path: str) -> dict:
        """What a checkpoint holds: base model and LoRA layout (tinker's `weights_info`)."""
        spec = self.checkpoint_spec(tenant_id, path)
        return {
            "base_model": spec.base_model,
            "optimizer_config": {"type": "adamw"},
            "is_lora": True,
            "lora_rank": spec.lora_rank,
            "train_unembed": spec.trains_unembed,
            "train_mlp": spec.trains_mlp,
            "train_attn": spec.trains_attention,
        }

    async def unload_model(self, tenant_id: str, model_id: str) -> None:
        await self.runs.unload(tenant_id, model_id)

    # ----- training ------------------------------------------------------------------------
    async def forward_backward(
        self,
        tenant_id: str,
        model_id: str,
        datums: list[Datum],
        loss_fn: str,
        loss_fn_config: dict[str, float],
        forward_only: bool,
    ) -> ForwardBackwardResult:
        """Sum-reduced loss; the gradient adds to the pending one (unless `forward_only`)."""
        row = self.model_row(tenant_id, model_id)
        await self.runs.ensure_loaded(row)
        op = ops.ForwardBackward(
            model_id,
            row.base_model,
            datums,
            loss_fn=loss_fn,
            loss_fn_config=loss_fn_config,
            reduction="sum",
            accumulate=True,
            forward_only=forward_only,
        )
        started = time.monotonic()
        result = await self.runs.submit(op, model_id, tenant_id)
        if not forward_only:
            self.runs.record_pending_loss(model_id, result, seconds=time.monotonic() - started)
        return result

    async def optim_step(self, tenant_id: str, model_id: str, adam: dict[str, float]) -> dict:
        result = await self.runs.optim_step(tenant_id, model_id, None, overrides=adam)
        return {
            "step": float(result["step"]),
            "learning_rate": float(result["learning_rate"]),
            "grad_norm": float(result["grad_norm"]),
        }

    # ----- checkpoints ---------------------------------------------------------------------
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
        if ttl_seconds is not None and not 0 < ttl_seconds <= files.MAX_TTL_SECONDS:
            raise InvalidRequest(
                f"ttl_seconds must be a number of seconds in [1, {files.MAX_TTL_SECONDS}]"
            )
        row = self.model_row(tenant_id, model_id)
        await self.runs.ensure_loaded(row)
        kind = SEGMENTS[wire_type]
        name = name or f"step_{self.store.get_run(model_id).step:06d}_{new_id('ckpt')[5:13]}"
        if not _NAME.match(name) or ".." in name:
            raise InvalidRequest(
                f"checkpoint name {name!r}: use letters, digits, '_', '-', '.' (and '/' between "
                "parts)"
            )
        existing = [c for c in self.store.list_checkpoints(model_id, kind) if c.name == name]
        if existing and not overwrite:
            raise InvalidRequest(
                f"run {model_id!r} already has a {wire_type} checkpoint named {name!r}; "
                "choose another name"
            )
        checkpoint_id = new_id("ckpt")
        folder = files.checkpoint_folder(self.runs.data_dir, model_id, checkpoint_id)
        engine_kind = "training" if kind == "training" else "sampler"
        saved = await self.runs.save_checkpoint(model_id, folder, engine_kind)
        checkpoint = await asyncio.to_thread(
            self.runs.record_checkpoint, model_id, kind, saved.step, folder, checkpoint_id, name
        )
        if ttl_seconds is not None:
            checkpoint.expires_at = checkpoint.created_at + ttl_seconds
            self.store.update_checkpoint(checkpoint.id, expires_at=checkpoint.expires_at)
        for old in existing:
            self._remove(old)
        return checkpoint

    async def load_weights(
        self, tenant_id: str, model_id: str, path: str, with_optimizer: bool
    ) -> None:
        """Load a checkpoint (of any run of this tenant) into this run; the adapter layout and
        the step come from the checkpoint. A sampler checkpoint loads weights only."""
        row = self.model_row(tenant_id, model_id)
        checkpoint = self.resolve(tenant_id, path)
        await self.runs.ensure_loaded(row)
        source = await asyncio.to_thread(self.runs.storage.local, checkpoint.path)
        checkpoint_id = new_id("ckpt")
        training = files.checkpoint_folder(self.runs.data_dir, model_id, checkpoint_id)
        # Then the loaded weights as this step's sampler weights, and the run's own training
        # copy: restarts resume the loaded state, not an older, later step.
        op = ops.LoadCheckpoint(
            model_id,
            source,
            with_optimizer,
            sampler_folder=files.step_folder_template(self.runs.data_dir, model_id),
            training_folder=str(training),
        )
        info = await self.runs.submit(op, model_id)
        steps = Path(info.sampler.folder)
        lora = info.config.lora  # the checkpoint's layout is the run's from now on
        loaded = replace(
            row.spec,
            lora_rank=lora.rank,
            lora_alpha=lora.alpha,
            target_modules=tuple(lora.target_modules),
            requested_target_modules=tuple(lora.target_modules),
        )
        self.store.update_run(model_id, **spec_columns(loaded))
        self.runs.restart_history_at(model_id, info.step, steps)
        previous = [
            c
            for c in self.store.list_checkpoints(model_id, "training")
            if c.name.startswith(LOADED_PREFIX)
        ]
        await asyncio.to_thread(
            self.runs.record_checkpoint,
            model_id,
            "training",
            info.step,
            training,
            checkpoint_id,
            f"{LOADED_PREFIX}{info.step}",
        )
        for old in previous:  # only the newest server-made copy is worth keeping
            self._remove(old)

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

    def list_checkpoints(self, tenant_id: str, run_id: str, tinker_ids: bool = False) -> list[dict]:
        """Listed for tinker (`tinker_ids`): every kind; for hpcai: no `external` ones."""
        self.runs.run_row(tenant_id, run_id)
        rows = [c for c in self._listed(run_id) if tinker_ids or c.kind != "external"]
        return [checkpoint_info(c, tinker_ids) for c in rows]

    def _listed(self, run_id: str) -> list[Checkpoint]:
        rows = [
            c
            for c in self.store.list_checkpoints(run_id)
            if c.kind in WIRE_TYPE and not self._expired(c)
        ]
        return sorted(rows, key=lambda c: c.created_at)

    def _expired(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.expires_at is not None and checkpoint.expires_at <= self.clock()

    def sweep_expired_checkpoints(self) -> int:
        """Delete the files and rows of checkpoints past their TTL; returns how many."""
        expired = self.store.expired_checkpoints(self.clock())
        for checkpoint in expired:
            self._remove(checkpoint)
        return len(expired)

    def checkpoint_by_id(self, tenant_id: str, run_id: str, checkpoint_id: str) -> Checkpoint:
        """A checkpoint named as in REST paths: `weights/NAME`, `sampler_weights/NAME`,
        `external_weights/NAME` (tinker), or a bare name (hpcai; a training checkpoint first)."""
        return self.find_checkpoint(tenant_id, run_id, *_split_id(checkpoint_id))

    # ----- downloads: signed per-file URLs -------------------------------------------------
    def external_weights_urls(
        self,
        tenant_id: str,
        run_id: str,
        checkpoint_id: str,
        base_url: str,
        seconds: int = DEFAULT_EXPIRY_SECONDS,
    ) -> dict:
        """`{urls: {relpath: signed URL}, expires}` for every file of a checkpoint this tenant
        may read (its own, or a public one). A URL needs no API key and grants one file."""
        name, kind = _split_id(checkpoint_id)
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
        return {"urls": urls, "expires": iso(expires)}

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

    def set_public(self, tenant_id: str, run_id: str, checkpoint_id: str, public: bool) -> None:
        checkpoint = self.checkpoint_by_id(tenant_id, run_id, checkpoint_id)
        self.store.update_checkpoint(checkpoint.id, public=public)

    def set_ttl(self, tenant_id: str, run_id: str, checkpoint_id: str, ttl: int | None) -> None:
        """Expire the checkpoint `ttl` seconds from now (None: keep it for good)."""
        if ttl is not None and not 0 < ttl <= files.MAX_TTL_SECONDS:
            raise InvalidRequest(
                f"ttl_seconds must be a number of seconds in [1, {files.MAX_TTL_SECONDS}], or null"
            )
        checkpoint = self.checkpoint_by_id(tenant_id, run_id, checkpoint_id)
        expires_at = None if ttl is None else self.clock() + ttl
        self.store.update_checkpoint(checkpoint.id, expires_at=expires_at)

    def delete_checkpoint(self, tenant_id: str, run_id: str, checkpoint_id: str) -> None:
        self._remove(self.checkpoint_by_id(tenant_id, run_id, checkpoint_id))

    def _remove(self, checkpoint: Checkpoint) -> None:
        self.runs.remove_files(checkpoint.path)
        self.store.delete_checkpoint(checkpoint.id)

    # ----- training runs (REST) ------------------------------------------------------------
    def training_run(self, row: Run) -> dict:
        listed = self._listed(row.id)
        training = [c for c in listed if c.kind == "training"]
        sampler = [c for c in listed if c.kind == "sampler_weights"]
        spec = row.spec
        return {
            "training_run_id": row.id,
            "base_model": row.base_model,
            "model_owner": row.tenant_id,
            "is_lora": True,
            "corrupted": False,
            "lora_rank": spec.lora_rank,
            "last_request_time": iso(row.updated_at),
            "last_checkpoint": checkpoint_info(training[-1]) if training else None,
            "last_sampler_checkpoint": checkpoint_info(sampler[-1]) if sampler else None,
            "user_metadata": dict(spec.user_metadata),
        }

    def get_training_run(self, tenant_id: str, run_id: str) -> dict:
        return self.training_run(self.runs.run_row(tenant_id, run_id))

    def list_training_runs(self, tenant_id: str, limit: int, offset: int) -> dict:
        rows = list(reversed(self.store.list_runs(tenant_id)))  # newest first
        page = rows[offset : offset + limit]
        return {
            "training_runs": [self.training_run(row) for row in page],
            "cursor": {"offset": offset, "limit": limit, "total_count": len(rows)},
        }

    # ----- sampling ------------------------------------------------------------------------
    async def sample(
        self,
        tenant_id: str,
        model_path: str | None,
        base_model: str | None,
        prompt_tokens: list[int],
        params: SamplingParams,
        num_samples: int,
        prompt_logprobs: bool,
    ) -> SampleResult:
        """Sample a saved checkpoint (`model_path` wins) or the bare base model.

        Stops as every face does (service/sampling.py).
        """
        if model_path:
            checkpoint = self.resolve(tenant_id, model_path)
            folder = await asyncio.to_thread(self.runs.storage.local, checkpoint.path)
            base = self.store.get_run(checkpoint.run_id).base_model
        elif base_model:
            self.check_base_model(base_model)
            folder, base = "", base_model
        else:
            raise InvalidRequest("send model_path (a sampler checkpoint) or base_model")
        if not prompt_tokens:
            raise InvalidRequest("prompt is empty: send at least one token")
        requests = sample_requests(
            base,
            [prompt_tokens],
            params,
            num_samples=num_samples,
            prompt_logprobs=prompt_logprobs,
            checkpoint=folder,
        )
        sampled = await self.runs.submit(ops.Sample(base, requests), "", tenant_id)
        return sampled.results[0]
