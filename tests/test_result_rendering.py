"""The services return typed results; each face's schema module renders them to the wire.

These pin the rendered shapes (the ones the clients read: contract-notes "Shapes", tinker-wire-
protocol.md §2.3) and check each against its route's response model: every key is declared,
none is left over. The integration tests drive the same renderers through the real clients."""

from __future__ import annotations

from dataclasses import replace

import pytest

from frontier_signal.engine.types import ForwardBackwardResult
from frontier_signal.server.schemas import signal as signal_wire
from frontier_signal.server.schemas import signal_responses, tinker_responses
from frontier_signal.server.schemas import tinker_outputs as answer
from frontier_signal.server.schemas.tinker import CreateModelBody
from frontier_signal.service.run_spec import spec_columns
from frontier_signal.service.runs import BaseModelEntry, SavedState, StepResult
from frontier_signal.service.tables import Checkpoint, Run
from frontier_signal.service.tinker import (
    ModelInfo,
    SignedUrls,
    TrainingRunInfo,
    TrainingRunPage,
)

SPEC = CreateModelBody(
    base_model="frontier-signal/tiny-llama",
    lora_config={"rank": 8, "seed": 3, "train_mlp": True},
    user_metadata={"team": 7},
).to_run_spec("tenant_a")


def declared(model: type, rendered: dict) -> dict:
    """The rendered answer, after checking it against `model`: every key declared."""
    parsed = model.model_validate(rendered)
    assert not parsed.model_extra, f"undeclared keys {sorted(parsed.model_extra)}"
    return rendered


def checkpoint(kind: str, name: str, created_at: float, **extra) -> Checkpoint:
    return Checkpoint(
        id=f"ckpt_{name}",
        run_id="run_1",
        name=name,
        kind=kind,
        step=4,
        path=f"/data/run_1/{name}",
        size=1234,
        sha256="ab" * 32,
        created_at=created_at,
        public=extra.get("public", False),
        expires_at=extra.get("expires_at"),
    )


def test_a_signal_forward_backward_renders_its_loss_and_gradient_stats():
    result = ForwardBackwardResult(
        "run_1", [[-0.5]], [[0.5]], 0.5, 1.0, 2.0, 7, 3, 1.25, 0.75, 0, 4096
    )
    rendered = declared(
        signal_responses.ForwardBackwardResult, signal_wire.forward_backward_result(result)
    )
    assert rendered == {
        "loss": 0.5,
        "step": 3,
        "grad_norm": 1.25,
        "grad_stats": {"max_abs": 0.75, "num_params": 4096, "nonfinite": 0},
        "tokens": 7,
    }


def test_a_step_renders_for_signal_with_metrics_and_for_tinker_as_floats():
    step = StepResult(5, 1e-4, 0.5, loss=1.5, tokens=12, clipped=False, checkpoint_id=None)
    rendered = declared(signal_responses.OptimStepResult, signal_wire.optim_step_result(step))
    assert rendered == {
        "step": 5,
        "learning_rate": 1e-4,
        "grad_norm": 0.5,
        "metrics": {"loss": 1.5, "tokens": 12, "clipped": False, "checkpoint_id": None},
    }
    tinker = answer.optim_step_metrics(step)
    assert tinker == {"step": 5.0, "learning_rate": 1e-4, "grad_norm": 0.5}
    assert all(type(value) is float for value in tinker.values())


def test_a_saved_state_renders_every_field_in_the_contract_order():
    saved = SavedState(
        "ckpt_1", "/data/c", "file:///data/c", "merged", 2, False, None, {"a.bin": 3}
    )
    rendered = declared(signal_responses.SavedState, signal_wire.saved_state(saved))
    assert list(rendered) == [
        "checkpoint_id",
        "checkpoint_path",
        "artifact_uri",
        "mode",
        "step",
        "pushed_to_hub",
        "hub_model_id",
        "files",
    ]
    assert rendered["files"] == {"a.bin": 3}
    entry = signal_wire.base_model_entry(BaseModelEntry("frontier-signal/tiny-llama", True))
    assert declared(signal_responses.BaseModelInfo, entry) == {
        "id": "frontier-signal/tiny-llama",
        "loaded": True,
    }


def test_get_info_and_weights_info_render_the_runs_spec():
    info = declared(tinker_responses.ModelInfo, answer.model_info(ModelInfo("run_1", SPEC)))
    assert info["model_id"] == "run_1"
    assert info["lora_rank"] == 8
    assert info["model_data"]["tokenizer_id"] == "frontier-signal/tiny-llama"
    weights = declared(tinker_responses.WeightsInfo, answer.weights_info(SPEC))
    assert weights == {
        "base_model": "frontier-signal/tiny-llama",
        "optimizer_config": {"type": "adamw"},
        "is_lora": True,
        "lora_rank": 8,
        "train_unembed": False,
        "train_mlp": True,
        "train_attn": True,
    }


@pytest.mark.parametrize("tinker_ids", [False, True])
def test_a_checkpoint_is_named_per_client(tinker_ids):
    row = checkpoint("training", "step_4", 100.0, public=True, expires_at=1e300)
    rendered = declared(tinker_responses.Checkpoint, answer.checkpoint_info(row, tinker_ids))
    assert rendered["checkpoint_id"] == ("weights/step_4" if tinker_ids else "step_4")
    assert rendered["checkpoint_path"] == "hpcai://run_1/training/step_4"
    assert rendered["tinker_path"] == "tinker://run_1/weights/step_4"
    assert rendered["public"] is True
    assert rendered["expires_at"].startswith("9999-12-31")  # clamped, not an overflow


def test_a_training_run_page_renders_runs_with_their_newest_checkpoints():
    run = Run(
        id="run_1",
        **spec_columns(replace(SPEC, seed=3)),
        effective={},
        status="active",
        step=4,
        created_at=10.0,
        updated_at=20.0,
    )
    sampler = checkpoint("sampler_weights", "s", 30.0)
    page = TrainingRunPage([TrainingRunInfo(run, None, sampler)], 0, 20, 1)
    rendered = declared(tinker_responses.TrainingRunList, answer.training_run_page(page))
    assert rendered["cursor"] == {"offset": 0, "limit": 20, "total_count": 1}
    listed = rendered["training_runs"][0]
    assert listed["last_checkpoint"] is None
    assert listed["last_sampler_checkpoint"]["checkpoint_path"] == "hpcai://run_1/sampler/s"
    assert listed["user_metadata"] == {"team": "7"}
    assert listed["model_owner"] == "tenant_a"


def test_signed_urls_render_their_expiry_as_a_date():
    signed = SignedUrls({"adapter_config.json": "http://x/y"}, 0)
    rendered = declared(tinker_responses.SignedUrls, answer.signed_urls(signed))
    assert rendered == {
        "urls": {"adapter_config.json": "http://x/y"},
        "expires": "1970-01-01T00:00:00+00:00",
    }
