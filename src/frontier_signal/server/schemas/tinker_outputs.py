"""The Tinker face's answers, rendered from engine results and the Tinker service's results.

`forward_backward_output` and `sample_output` give the exact result shapes of
tinker-wire-protocol.md §2.3; the other functions render `service/tinker.py`'s typed results
(models, checkpoints, training runs, signed URLs, optimizer steps) as the shapes of
`tinker_responses.py`. Nothing here touches torch or the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from frontier_signal.service.tinker_paths import TINKER_SEGMENT, WIRE_TYPE, checkpoint_path

if TYPE_CHECKING:  # types only: rendering needs no service (nor the engine) loaded
    from frontier_signal.engine.types import ForwardBackwardResult, SampleResult
    from frontier_signal.service.run_spec import RunSpec
    from frontier_signal.service.runs import StepResult
    from frontier_signal.service.tables import Checkpoint
    from frontier_signal.service.tinker import (
        ModelInfo,
        SignedUrls,
        TrainingRunInfo,
        TrainingRunPage,
    )

LATEST_DATE = datetime(9999, 12, 31, tzinfo=UTC).timestamp()


# ----- engine results → result shapes (§2.3) -----------------------------------------------
def tensor(values: list[float]) -> dict:
    return {"data": list(values), "dtype": "float32", "shape": [len(values)]}


def forward_backward_output(result: ForwardBackwardResult) -> dict:
    outputs = [
        {"logprobs": tensor(logprobs), "elementwise_loss": tensor(loss)}
        for logprobs, loss in zip(result.logprobs, result.elementwise_loss, strict=True)
    ]
    return {
        "loss_fn_output_type": "scalar",
        "loss_fn_outputs": outputs,
        "metrics": result.metrics,
    }


def sample_output(result: SampleResult, prompt_logprobs: bool) -> dict:
    sequences = [
        {"tokens": s.tokens, "logprobs": s.logprobs, "stop_reason": s.stop_reason}
        for s in result.sequences
    ]
    return {
        "type": "sample",
        "sequences": sequences,
        "prompt_logprobs": result.prompt_logprobs if prompt_logprobs else None,
    }


# ----- service results → answers (tinker_responses.py) -----------------------------------
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


def checkpoint_list(rows: list[Checkpoint], tinker_ids: bool = False) -> list[dict]:
    return [checkpoint_info(row, tinker_ids) for row in rows]


def model_info(info: ModelInfo) -> dict:
    """tinker's `get_info` answer."""
    base_model = info.spec.base_model
    return {
        "type": "get_info",
        "model_id": info.model_id,
        "model_data": {"model_name": base_model, "arch": "llama", "tokenizer_id": base_model},
        "is_lora": True,
        "lora_rank": info.spec.lora_rank,
        "model_name": base_model,
        "optimizer_config": {"type": "adamw"},
    }


def weights_info(spec: RunSpec) -> dict:
    """What a checkpoint holds: base model and LoRA layout (tinker's `weights_info`)."""
    return {
        "base_model": spec.base_model,
        "optimizer_config": {"type": "adamw"},
        "is_lora": True,
        "lora_rank": spec.lora_rank,
        "train_unembed": spec.trains_unembed,
        "train_mlp": spec.trains_mlp,
        "train_attn": spec.trains_attention,
    }


def optim_step_metrics(result: StepResult) -> dict:
    """An optimizer step's `metrics` (floats, as tinker reads them)."""
    return {
        "step": float(result.step),
        "learning_rate": float(result.learning_rate),
        "grad_norm": float(result.grad_norm),
    }


def training_run(info: TrainingRunInfo) -> dict:
    row, spec = info.run, info.run.spec
    last, last_sampler = info.last_checkpoint, info.last_sampler_checkpoint
    return {
        "training_run_id": row.id,
        "base_model": row.base_model,
        "model_owner": row.tenant_id,
        "is_lora": True,
        "corrupted": False,
        "lora_rank": spec.lora_rank,
        "last_request_time": iso(row.updated_at),
        "last_checkpoint": checkpoint_info(last) if last else None,
        "last_sampler_checkpoint": checkpoint_info(last_sampler) if last_sampler else None,
        "user_metadata": dict(spec.user_metadata),
    }


def training_run_page(page: TrainingRunPage) -> dict:
    return {
        "training_runs": [training_run(info) for info in page.runs],
        "cursor": {"offset": page.offset, "limit": page.limit, "total_count": page.total_count},
    }


def signed_urls(signed: SignedUrls) -> dict:
    """`{urls: {relpath: signed URL}, expires}`."""
    return {"urls": dict(signed.urls), "expires": iso(signed.expires)}
