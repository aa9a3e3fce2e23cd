"""Wire schemas of the Signal REST API (docs/signal-api.md): bodies in, dicts out.

`CreateRunBody.to_run_spec` turns a create body into the internal `RunSpec`; `run_config`
renders a RunSpec back as the `config` this face has always shown, and the small functions at
the end render the run service's results (`service/runs.py`) as this face's answers."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field

from frontier_signal.engine.types import (
    ATTENTION_MODULES,
    MLP_MODULES,
    ForwardBackwardResult,
    OptimizerSpec,
    normalize_target_modules,
)
from frontier_signal.server.schemas.rules import WireBody
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.run_spec import RunSpec
from frontier_signal.service.tables import Checkpoint, Metric, Run

if TYPE_CHECKING:  # the run service's results, rendered at the end of this module
    from frontier_signal.service.runs import BaseModelEntry, SavedState, StepResult


class Body(WireBody):
    # A misspelt field is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class CreateRunBody(Body):
    base_model: str = Field(min_length=1)
    lora_r: int = Field(32, ge=1, le=1024)
    lora_alpha: float = Field(64, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | None = None
    optimizer: Literal["adamw", "adamw_8bit", "sgd"] = "adamw_8bit"
    learning_rate: float = Field(3e-4, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0, le=10.0)
    max_seq_length: int = Field(2048, ge=2, le=131072)
    bf16: bool = True
    gradient_checkpointing: bool = True
    seed: int | None = Field(None, ge=0, le=2**53 - 1)

    def to_run_spec(self, tenant_id: str) -> RunSpec:
        """The run this body asks for (None target modules: every attention and MLP layer).

        Raises:
            InvalidRequest: an unknown target module (the valid ones are listed).
        """
        requested = self.lora_target_modules
        try:
            targets = normalize_target_modules(requested or ATTENTION_MODULES + MLP_MODULES)
        except ValueError as exc:
            raise InvalidRequest(f"lora_target_modules: {exc}") from None
        return RunSpec(
            base_model=self.base_model,
            tenant_id=tenant_id,
            face="signal",
            lora_rank=self.lora_r,
            lora_alpha=float(self.lora_alpha),
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            requested_target_modules=None if requested is None else tuple(requested),
            # The Signal face trains like HF/PyTorch users expect: AdamW (0.9, 0.999), eps 1e-8.
            optimizer=OptimizerSpec(
                kind=self.optimizer,
                learning_rate=self.learning_rate,
                beta1=0.9,
                beta2=0.999,
                eps=1e-8,
                weight_decay=self.weight_decay,
            ),
            max_seq_length=self.max_seq_length,
            gradient_checkpointing=self.gradient_checkpointing,
            bf16=self.bf16,
            seed=self.seed,
        )


class ForwardBackwardBody(Body):
    batch: list[dict[str, Any]]
    accumulate: bool = False


class OptimStepBody(Body):
    learning_rate: float | None = Field(None, gt=0.0, le=1.0)


class SampleBody(Body):
    prompts: list[str] = Field(default_factory=list, max_length=1024)
    prompt: str | None = None  # streaming takes one prompt, in either field
    max_tokens: int = Field(512, ge=1, le=16384)
    temperature: float = Field(0.7, ge=0.0, le=10.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    logit_bias: dict[str, float] | None = None  # {"token id": bias in [-100, 100]}
    return_logprobs: bool = False
    step: int | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, le=2**53 - 1)
    stop: list[str] | None = Field(None, max_length=16)

    def prompt_list(self) -> list[str]:
        return self.prompts + ([self.prompt] if self.prompt is not None else [])


class EmbeddingsBody(Body):
    texts: list[str] = Field(min_length=1, max_length=1024)
    step: int | None = Field(None, ge=0)


class SaveStateBody(Body):
    mode: Literal["adapter", "merged", "gguf", "gguf-q8_0"] = "adapter"
    push_to_hub: bool = False
    hub_model_id: str | None = None


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def run_config(spec: RunSpec) -> dict:
    """A run's `config` as this face shows it: the create body's fields, the seed filled in
    (and, for a run the Tinker face made, the extras that face kept)."""
    requested = spec.requested_target_modules
    config = {
        "base_model": spec.base_model,
        "lora_r": spec.lora_rank,
        "lora_alpha": spec.lora_alpha,
        "lora_dropout": spec.lora_dropout,
        "lora_target_modules": None if requested is None else list(requested),
        "optimizer": spec.optimizer.kind,
        "learning_rate": spec.optimizer.learning_rate,
        "weight_decay": spec.optimizer.weight_decay,
        "max_seq_length": spec.max_seq_length,
        "bf16": spec.bf16,
        "gradient_checkpointing": spec.gradient_checkpointing,
        "seed": spec.seed,
    }
    if spec.face == "tinker":
        config |= {
            "api": "tinker",
            "lora_config": {
                "rank": spec.lora_rank,
                "seed": spec.seed,
                "train_attn": spec.trains_attention,
                "train_mlp": spec.trains_mlp,
                "train_unembed": spec.trains_unembed,
            },
            "session_id": spec.session_id,
            "user_metadata": dict(spec.user_metadata),
        }
    return config


def run_status(row: Run) -> dict:
    return {
        "run_id": row.id,
        "base_model": row.base_model,
        "status": row.status,
        "step": row.step,
        "config": run_config(row.spec),
        "effective": row.effective,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def checkpoint_info(row: Checkpoint) -> dict:
    return {
        "checkpoint_id": row.id,
        "name": row.name,
        "kind": row.kind,
        "step": row.step,
        "size": row.size,
        "sha256": row.sha256,
        "created_at": iso(row.created_at),
    }


def metric_row(row: Metric) -> dict:
    return {
        "step": row.step,
        "loss": row.loss,
        "grad_norm": row.grad_norm,
        "learning_rate": row.learning_rate,
        "tokens": row.tokens,
        "time": iso(row.time),
    }


def base_model_entry(entry: BaseModelEntry) -> dict:
    return {"id": entry.id, "loaded": entry.loaded}


def forward_backward_result(result: ForwardBackwardResult) -> dict:
    """A forward_backward as this face shows it: the mean loss, the gradient's norm and stats."""
    return {
        "loss": result.loss,
        "step": result.step,
        "grad_norm": result.grad_norm,
        "grad_stats": {
            "max_abs": result.grad_max_abs,
            "num_params": result.num_params,
            "nonfinite": result.grad_nonfinite,
        },
        "tokens": result.num_tokens,
    }


def optim_step_result(result: StepResult) -> dict:
    return {
        "step": result.step,
        "learning_rate": result.learning_rate,
        "grad_norm": result.grad_norm,
        "metrics": {
            "loss": result.loss,
            "tokens": result.tokens,
            "clipped": result.clipped,
            "checkpoint_id": result.checkpoint_id,
        },
    }


def saved_state(saved: SavedState) -> dict:
    """A save_state's answer (contract-notes, "Shapes": the folder and its file:// URI)."""
    return dataclasses.asdict(saved)
