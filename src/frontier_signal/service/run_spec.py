"""`RunSpec`: what a run is, whichever API face created it, and its conversions to the engine's
`RunConfig` and to the `runs` table's columns.

Each face's schema module builds a RunSpec from its own wire fields (`to_run_spec` in
`server/schemas/signal.py` and `server/schemas/tinker.py`) and renders its wire shapes from one;
nothing below the schemas reads a face's field names. The store keeps every field in a typed
column of `runs` (migration 0004); `spec_of(row)` reads it back.

What it does not do: validate ranges (the faces' schemas and the engine's `check_run_config`
do), pick a seed (the run service does when `seed` is None), or touch the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from frontier_signal.engine.types import (
    ATTENTION_MODULES,
    MLP_MODULES,
    UNEMBED_MODULES,
    LoraSpec,
    OptimizerSpec,
    RunConfig,
)

if TYPE_CHECKING:
    from frontier_signal.service.tables import Run

Face = Literal["signal", "tinker"]
FACES: tuple[str, ...] = ("signal", "tinker")
# Hyperparameters kept in the `optimizer_params` JSON column (all floats), besides its name.
OPTIMIZER_PARAMS: tuple[str, ...] = (
    "learning_rate",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "grad_clip_norm",
)


@dataclass(frozen=True)
class RunSpec:
    """One run, as created (a Tinker `load_weights` later replaces its LoRA layout).

    Args:
        base_model: the registered base model it trains.
        tenant_id: its owner.
        face: the API face that created it (`signal` or `tinker`; hpcai speaks tinker).
        lora_rank, lora_alpha, lora_dropout: the adapter's shape (`alpha / rank` scales it).
        target_modules: the module names the adapter trains, normalized (`q_proj`, ...).
        requested_target_modules: the modules as the creator spelt them, None when it named
            none (the Signal face shows the request as it came).
        optimizer: name and hyperparameters of the run's own optimizer (a step may override
            them for itself).
        seed: the adapter's init seed; None until the run service picks one.
        max_seq_length: the longest sequence it trains on.
        gradient_checkpointing: as requested (the engine may checkpoint a large batch anyway).
        bf16: as requested (a device without fast bf16 runs fp32 and the status says so).
        session_id: the tinker SDK session that owns it, if any.
        user_metadata: the creator's free-form labels (tinker), strings to strings.
    """

    base_model: str
    tenant_id: str
    face: Face
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple[str, ...]
    optimizer: OptimizerSpec
    max_seq_length: int
    gradient_checkpointing: bool
    bf16: bool
    seed: int | None = None
    requested_target_modules: tuple[str, ...] | None = None
    session_id: str | None = None
    user_metadata: dict[str, str] = field(default_factory=dict, hash=False)

    def engine_config(self) -> RunConfig:
        """What the engine needs to create (or recreate) the run; the seed must be set."""
        if self.seed is None:
            raise ValueError("a run's seed is picked before the engine sees it")
        return RunConfig(
            base_model=self.base_model,
            lora=LoraSpec(
                rank=self.lora_rank,
                alpha=float(self.lora_alpha),
                dropout=self.lora_dropout,
                seed=self.seed,
                target_modules=self.target_modules,
            ),
            optimizer=self.optimizer,
            max_seq_length=self.max_seq_length,
            gradient_checkpointing=self.gradient_checkpointing,
        )

    @property
    def trains_attention(self) -> bool:
        return any(name in ATTENTION_MODULES for name in self.target_modules)

    @property
    def trains_mlp(self) -> bool:
        return any(name in MLP_MODULES for name in self.target_modules)

    @property
    def trains_unembed(self) -> bool:
        return any(name in UNEMBED_MODULES for name in self.target_modules)


def optimizer_params(optimizer: OptimizerSpec) -> dict[str, float]:
    """The hyperparameters of `optimizer`, as stored in the `optimizer_params` column."""
    return {name: float(getattr(optimizer, name)) for name in OPTIMIZER_PARAMS}


def spec_columns(spec: RunSpec) -> dict[str, Any]:
    """The `runs` columns that hold `spec` (for a new row or `Store.update_run`)."""
    requested = spec.requested_target_modules
    return {
        "tenant_id": spec.tenant_id,
        "base_model": spec.base_model,
        "face": spec.face,
        "session_id": spec.session_id,
        "lora_rank": spec.lora_rank,
        "lora_alpha": float(spec.lora_alpha),
        "lora_dropout": float(spec.lora_dropout),
        "target_modules": list(spec.target_modules),
        "requested_target_modules": None if requested is None else list(requested),
        "optimizer": spec.optimizer.kind,
        "optimizer_params": optimizer_params(spec.optimizer),
        "seed": spec.seed,
        "max_seq_length": spec.max_seq_length,
        "gradient_checkpointing": spec.gradient_checkpointing,
        "bf16": spec.bf16,
        "user_metadata": dict(spec.user_metadata),
    }


def spec_of(row: Run) -> RunSpec:
    """The RunSpec a `runs` row holds."""
    params = row.optimizer_params or {}
    requested = row.requested_target_modules
    return RunSpec(
        base_model=row.base_model,
        tenant_id=row.tenant_id,
        face="tinker" if row.face == "tinker" else "signal",
        lora_rank=row.lora_rank,
        lora_alpha=row.lora_alpha,
        lora_dropout=row.lora_dropout,
        target_modules=tuple(row.target_modules),
        optimizer=OptimizerSpec(
            row.optimizer,  # type: ignore[arg-type]  # one of the names the faces accept
            **{name: float(params[name]) for name in OPTIMIZER_PARAMS if name in params},
        ),
        max_seq_length=row.max_seq_length,
        gradient_checkpointing=row.gradient_checkpointing,
        bf16=row.bf16,
        seed=row.seed,
        requested_target_modules=None if requested is None else tuple(requested),
        session_id=row.session_id,
        user_metadata={str(k): str(v) for k, v in (row.user_metadata or {}).items()},
    )
