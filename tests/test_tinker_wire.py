"""Tinker-face pieces without a server: checkpoint paths and wire → engine conversions."""

from __future__ import annotations

import json
import math

import pytest

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import ForwardBackwardResult
from frontier_signal.server.routes.tinker import TinkerJSONResponse
from frontier_signal.server.schemas.tinker import (
    DEFAULT_MAX_TOKENS,
    ForwardBackwardInput,
    WireSamplingParams,
    forward_backward_output,
    to_datums,
    to_sampling_params,
)
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.tinker import CheckpointRef, parse_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("hpcai://run_a/training/step_0010", CheckpointRef("run_a", "training", "step_0010")),
        ("tinker://run_a/weights/step_0010", CheckpointRef("run_a", "training", "step_0010")),
        ("hpcai://run_a/sampler/s", CheckpointRef("run_a", "sampler_weights", "s")),
        ("hpcai://run_a/sampler_weights/s", CheckpointRef("run_a", "sampler_weights", "s")),
        ("tinker://run_a/s", CheckpointRef("run_a", "sampler_weights", "s")),
        ("run_a/training/a/b", CheckpointRef("run_a", "training", "a/b")),
    ],
)
def test_checkpoint_paths_accept_every_spelling(path, expected):
    assert parse_path(path) == expected


@pytest.mark.parametrize("path", ["", "hpcai://run_a", "hpcai://run_a/other/x", "run_a/x"])
def test_a_path_of_no_known_form_is_refused_with_the_expected_form(path):
    with pytest.raises(InvalidRequest, match="hpcai://RUN_ID/training/NAME"):
        parse_path(path)


def batch(**datum) -> ForwardBackwardInput:
    chunks = [{"type": "encoded_text", "tokens": [1, 2]}, {"type": "encoded_text", "tokens": [3]}]
    return ForwardBackwardInput.model_validate(
        {"data": [{"model_input": {"chunks": chunks}, **datum}], "loss_fn": "importance_sampling"}
    )


def tensor(values, dtype="float32"):
    return {"data": values, "dtype": dtype, "shape": [len(values)]}


def test_a_wire_datum_becomes_an_engine_datum_with_chunks_joined():
    wire = batch(
        loss_fn_inputs={
            "target_tokens": tensor([2, 3, 4], "int64"),
            "logprobs": tensor([-1.0, -2.0, -3.0]),
            "advantages": tensor([0.5, 0.5, 0.5]),
        }
    )
    datums, loss_fn, config = to_datums(wire)
    assert loss_fn == "importance_sampling" and config == {}
    assert datums[0].input_tokens == [1, 2, 3] and datums[0].target_tokens == [2, 3, 4]
    assert datums[0].sampler_logprobs == [-1.0, -2.0, -3.0] and datums[0].weights == []


def test_wire_datums_with_missing_wrong_or_unknown_inputs_are_refused():
    with pytest.raises(InvalidRequest, match="target_tokens is required"):
        to_datums(batch(loss_fn_inputs={}))
    with pytest.raises(InvalidRequest, match="one per model_input token"):
        to_datums(batch(loss_fn_inputs={"target_tokens": tensor([1], "int64")}))
    with pytest.raises(InvalidRequest, match="unknown keys"):
        to_datums(batch(loss_fn_inputs={"target_tokens": tensor([1, 2, 3]), "mask": tensor([1])}))
    image = ForwardBackwardInput.model_validate(
        {"data": [{"model_input": {"chunks": [{"type": "image_asset_pointer", "tokens": 4}]}}]}
    )
    with pytest.raises(InvalidRequest, match="only encoded_text"):
        to_datums(image)


def test_sampling_params_map_stops_and_a_null_max_tokens():
    params = to_sampling_params(WireSamplingParams(max_tokens=None, stop="\n", seed=3))
    assert params.max_tokens == DEFAULT_MAX_TOKENS and params.stop_strings == ("\n",)
    ids = to_sampling_params(WireSamplingParams(max_tokens=4, stop=[7, 9]))
    assert ids.stop_token_ids == (7, 9) and ids.stop_strings == ()


def test_sampling_params_carry_min_p_and_logit_bias_from_raw_json():
    params = to_sampling_params(WireSamplingParams(min_p=0.1, logit_bias={"5": -100}))
    assert params.min_p == 0.1 and params.logit_bias == ((5, -100.0),)
    with pytest.raises(InvalidInputError, match="token ids"):
        to_sampling_params(WireSamplingParams(logit_bias={"x": 1}))


def test_forward_backward_output_has_exact_tensor_keys_and_split_metric_names():
    result = ForwardBackwardResult(
        "run", [[-1.0, math.nan]], [[1.0, math.inf]], 0, math.inf, 2.0, 2, 1, 0, 0, 0, 0
    )
    output = forward_backward_output(result)
    assert set(output["loss_fn_outputs"][0]["logprobs"]) == {"data", "dtype", "shape"}
    assert all(len(key.split(":")) == 2 for key in output["metrics"])
    body = TinkerJSONResponse(output).body
    assert json.loads(body)["metrics"]["loss:sum"] == math.inf  # NaN/Inf stay JSON literals
