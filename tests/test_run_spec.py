"""RunSpec: each face's schema builds it, the Signal face renders the `config` it always showed
from it, the `runs` columns hold it exactly, and it crosses a process boundary (pickle)."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from frontier_signal.engine.types import ATTENTION_MODULES, MLP_MODULES
from frontier_signal.server.schemas.signal import CreateRunBody, run_config
from frontier_signal.server.schemas.tinker import CreateModelBody, LoadWeightsBody
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.run_spec import spec_columns, spec_of
from frontier_signal.service.tables import Run

SIGNAL_BODIES = [
    {"base_model": "m"},
    {"base_model": "m", "lora_target_modules": ["q", "v_proj", "lm_head"], "seed": 0},
    {"base_model": "m", "lora_r": 8, "optimizer": "sgd", "bf16": False, "max_seq_length": 64},
]


@pytest.mark.parametrize("fields", SIGNAL_BODIES)
def test_the_signal_config_is_the_create_body_with_its_seed(fields):
    body = CreateRunBody.model_validate(fields)
    spec = replace(body.to_run_spec("alice"), seed=fields.get("seed", 11))
    # What the Signal face stored and showed before RunSpec: the body, the seed filled in.
    assert run_config(spec) == body.model_dump() | {"seed": spec.seed}
    assert spec.face == "signal" and spec.tenant_id == "alice" and spec.session_id is None
    assert spec.optimizer.beta2 == 0.999 and spec.optimizer.eps == 1e-8


def test_signal_target_modules_are_normalized_for_the_engine_and_kept_as_spelt():
    body = CreateRunBody(base_model="m", lora_target_modules=["v", "q"])
    spec = body.to_run_spec("alice")
    assert spec.target_modules == ("q_proj", "v_proj")
    assert spec.requested_target_modules == ("v", "q")
    assert CreateRunBody(base_model="m").to_run_spec("a").target_modules == (
        ATTENTION_MODULES + MLP_MODULES
    )
    with pytest.raises(InvalidRequest, match="valid: q_proj"):
        CreateRunBody(base_model="m", lora_target_modules=["qq"]).to_run_spec("alice")


def test_a_tinker_model_shows_on_the_signal_face_as_the_old_tinker_config():
    body = CreateModelBody.model_validate(
        {
            "base_model": "m",
            "lora_config": {"rank": 4, "seed": 3, "train_mlp": True},
            "session_id": "sess",
            "user_metadata": {"n": 1},
        }
    )
    spec = body.to_run_spec("bob")
    targets = list(ATTENTION_MODULES + MLP_MODULES)
    assert run_config(spec) == {
        "base_model": "m",
        "lora_r": 4,
        "lora_alpha": 32.0,
        "lora_dropout": 0.0,
        "lora_target_modules": targets,
        "optimizer": "adamw",
        "learning_rate": 1e-4,
        "weight_decay": 0.0,
        "max_seq_length": 4096,
        "bf16": False,
        "gradient_checkpointing": False,
        "seed": 3,
        "api": "tinker",
        "lora_config": {
            "rank": 4,
            "seed": 3,
            "train_attn": True,
            "train_mlp": True,
            "train_unembed": False,
        },
        "session_id": "sess",
        "user_metadata": {"n": "1"},
    }


def test_tinker_bodies_refuse_what_would_train_nothing_or_another_optimizer():
    off = {"train_attn": False, "train_mlp": False, "train_unembed": False}
    with pytest.raises(InvalidRequest, match="all false"):
        CreateModelBody(base_model="m", lora_config=off).to_run_spec("bob")
    with pytest.raises(InvalidRequest, match="adamw"):
        CreateModelBody(base_model="m", optimizer_config={"type": "sgd"}).to_run_spec("bob")


def test_a_model_made_from_a_checkpoint_takes_the_source_layout_and_its_own_session():
    source = CreateRunBody(base_model="m", lora_r=16, lora_target_modules=["lm_head"], seed=5)
    body = LoadWeightsBody(path="tinker://r/weights/x", session_id="s2", user_metadata={"a": "b"})
    spec = body.to_run_spec("carol", source.to_run_spec("alice"))
    assert (spec.tenant_id, spec.face, spec.session_id, spec.seed) == (
        "carol",
        "tinker",
        "s2",
        None,
    )
    assert (spec.lora_rank, spec.target_modules) == (16, ("lm_head",))
    with pytest.raises(InvalidRequest, match="checkpoint is of 'm'"):
        LoadWeightsBody(path="p", base_model="other").to_run_spec("c", source.to_run_spec("a"))


def test_the_runs_columns_hold_a_spec_exactly_and_it_pickles():
    specs = [
        replace(CreateRunBody.model_validate(fields).to_run_spec("alice"), seed=9)
        for fields in SIGNAL_BODIES
    ]
    tinker = CreateModelBody(base_model="m", session_id="s", user_metadata={"k": "v"})
    specs.append(replace(tinker.to_run_spec("bob"), seed=2**40))
    for spec in specs:
        assert spec_of(Run(id="r", **spec_columns(spec))) == spec
        assert pickle.loads(pickle.dumps(spec)) == spec
        assert spec.engine_config().lora.seed == spec.seed
