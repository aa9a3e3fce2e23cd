"""The Tinker face's multi-step model flows, over `TinkerService` and `SessionService`: creating a
model (in a session or not), loading a checkpoint into a new or existing model, and making
sampling sessions from checkpoints or base models.

Each flow is split in two: `plan_*` checks everything that can be refused at once (an unknown
base model, an expired session, a bad checkpoint path: a 4xx before any future exists) and
returns a frozen plan; the plan's operation runs later as the future. It knows nothing about
HTTP and does not call the scheduler itself (`TinkerService` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.run_spec import RunSpec
from frontier_signal.service.sessions import SessionService, session_model_id
from frontier_signal.service.tables import Run, Sampler
from frontier_signal.service.tinker import TinkerService


@dataclass(frozen=True)
class LoadPlan:
    """A `load_weights`: into `model_id`, made first from `create` when it is not None."""

    model_id: str
    path: str
    with_optimizer: bool
    create: RunSpec | None = None  # the new model's spec (tinker), None for an existing one


class TinkerModels:
    """Model, checkpoint-loading and sampler flows of the Tinker face."""

    def __init__(self, tinker: TinkerService, sessions: SessionService):
        self.tinker = tinker
        self.sessions = sessions
        self.store = tinker.store

    # ----- create_model ---------------------------------------------------------------------
    def session_model(self, tenant_id: str, session_id: str | None, seq_id: int | None):
        """The id a tinker session's model gets (None outside a session).

        Raises:
            NotFound / InvalidRequest: the session does not exist or is no longer active.
        """
        if session_id is None:
            return None
        self.sessions.active(tenant_id, session_id)
        return session_model_id(session_id, seq_id or 0)

    async def plan_create(self, spec: RunSpec) -> None:
        """Refuse at once what `create` would refuse: an unknown base model (404), a model
        over the memory budget (4xx)."""
        await self.tinker.check_memory(spec)

    async def create(self, spec: RunSpec, run_id: str | None) -> Run:
        return await self.tinker.create_model(spec, run_id)

    # ----- load_weights ---------------------------------------------------------------------
    def plan_load(
        self,
        tenant_id: str,
        path: str,
        with_optimizer: bool,
        model_id: str | None,
        session_id: str | None = None,
        model_seq_id: int | None = None,
        spec_from_source: Callable[[RunSpec], RunSpec] | None = None,
    ) -> LoadPlan:
        """hpcai loads into an existing `model_id`; tinker (`session_id`) makes a new model,
        named by session and seq id, whose spec `spec_from_source` derives from the
        checkpoint's run (its base model and layout).

        Raises:
            NotFound: the path names no readable checkpoint, or the model is not this tenant's.
            InvalidRequest: neither a model nor a session, or a spec the face refuses.
        """
        self.tinker.resolve(tenant_id, path)  # a bad path is a 4xx at once
        if session_id is None:
            if not model_id:
                raise InvalidRequest("send model_id, or session_id with model_seq_id")
            self.tinker.model_row(tenant_id, model_id)
            return LoadPlan(model_id, path, with_optimizer)
        new_id = self.session_model(tenant_id, session_id, model_seq_id)
        assert new_id is not None and spec_from_source is not None
        source = self.tinker.checkpoint_spec(tenant_id, path)
        return LoadPlan(new_id, path, with_optimizer, spec_from_source(source))

    async def load(self, tenant_id: str, plan: LoadPlan) -> None:
        if plan.create is not None:
            await self.create(plan.create, plan.model_id)
        await self.tinker.load_weights(tenant_id, plan.model_id, plan.path, plan.with_optimizer)

    # ----- samplers -------------------------------------------------------------------------
    def new_sampler(
        self,
        tenant_id: str,
        session_id: str | None,
        model_path: str | None,
        base_model: str | None,
    ) -> Sampler:
        """A sampling session pinned to a sampler checkpoint (its run's base model) or a bare
        base model."""
        if model_path:
            checkpoint = self.tinker.resolve(tenant_id, model_path)
            base_model = self.store.existing_run(checkpoint.run_id).base_model
        elif base_model:
            self.tinker.check_base_model(base_model)
        else:
            raise InvalidRequest("send model_path (a sampler checkpoint) or base_model")
        return self.sessions.create_sampler(tenant_id, session_id, base_model, model_path)

    def sampler_for_model(self, tenant_id: str, model_id: str, path: str) -> Sampler:
        """tinker's save_weights_and_get_sampling_client: a sampler over the weights just saved
        of `model_id`, in that model's session."""
        session_id = self.tinker.model_spec(tenant_id, model_id).session_id
        return self.new_sampler(tenant_id, session_id, path, None)

    def sample_source(
        self,
        tenant_id: str,
        sampling_session_id: str | None,
        model_path: str | None,
        base_model: str | None,
    ) -> tuple[str | None, str | None]:
        """(model_path, base_model) to sample: a sampling session's pinned weights win; the
        path must name a readable checkpoint, the base model one this server has."""
        if sampling_session_id:
            sampler = self.sessions.sampler(tenant_id, sampling_session_id)
            model_path, base_model = sampler.model_path, sampler.base_model
        if model_path:
            self.tinker.resolve(tenant_id, model_path)
        elif base_model:
            self.tinker.check_base_model(base_model)
        return model_path, base_model
