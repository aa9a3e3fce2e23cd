"""The protobuf encoding of the Tinker face against tinker 0.38's own encoders and decoders, and
the `tml-` spelling of keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zstandard

from frontier_signal.server import tinker_proto
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.store import Store, tinker_key_form

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402
from tinker.proto.request_conv import forward_backward_request_to_proto  # noqa: E402
from tinker.proto.response_conv import (  # noqa: E402
    deserialize_forward_backward_output,
    deserialize_sample_response,
)


def _request_bytes(datum, loss_fn="cross_entropy", config=None) -> bytes:
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(
            data=[datum], loss_fn=loss_fn, loss_fn_config=config
        ),
        model_id="run_x",
        seq_id=7,
    )
    message = forward_backward_request_to_proto(request)
    message.forward_only = True
    return message.SerializeToString()


def test_a_tinker_request_decodes_to_the_json_body_shape_even_zstd_compressed():
    datum = types.Datum(
        model_input=types.ModelInput.from_ints([5, 6, 7]),
        loss_fn_inputs={"target_tokens": [6, 7, 8], "advantages": [0.5, -1.0, 2.0]},
    )
    raw = _request_bytes(datum, "cispo", {"clip_low_threshold": 0.7})
    body = tinker_proto.decode_forward_backward(
        tinker_proto.decompress(zstandard.ZstdCompressor().compress(raw), "zstd")
    )
    assert body["model_id"] == "run_x" and body["seq_id"] == 7 and body["forward_only"]
    batch = body["forward_backward_input"]
    assert batch["loss_fn"] == "cispo"
    assert batch["loss_fn_config"] == {"clip_low_threshold": pytest.approx(0.7)}
    (wire,) = batch["data"]
    assert wire["model_input"]["chunks"] == [{"type": "encoded_text", "tokens": [5, 6, 7]}]
    assert wire["loss_fn_inputs"]["target_tokens"]["data"] == [6, 7, 8]
    assert wire["loss_fn_inputs"]["advantages"]["data"] == [0.5, -1.0, 2.0]


def test_a_sparse_tensor_is_made_dense():
    datum = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2]),
        loss_fn_inputs={
            "target_tokens": [2, 3],
            "weights": types.TensorData(
                data=np.array([1.0], dtype=np.float32),
                dtype="float32",
                shape=[1, 2],
                sparse_crow_indices=[0, 1],
                sparse_col_indices=[1],
            ),
        },
    )
    body = tinker_proto.decode_forward_backward(_request_bytes(datum))
    weights = body["forward_backward_input"]["data"][0]["loss_fn_inputs"]["weights"]
    assert weights["data"] == [0.0, 1.0] and weights["shape"] == [1, 2]


def test_garbage_bodies_and_unknown_encodings_are_clear_400s():
    with pytest.raises(InvalidRequest, match="not a tinker ForwardBackwardRequest"):
        tinker_proto.decode_forward_backward(b"\xff\xff\xff")
    with pytest.raises(InvalidRequest, match="could not be decompressed"):
        tinker_proto.decompress(b"not zstd", "zstd")
    with pytest.raises(InvalidRequest, match="gzip"):
        tinker_proto.decompress(b"", "gzip")


def test_results_encode_to_what_tinkers_decoders_read():
    result = {
        "loss_fn_output_type": "scalar",
        "loss_fn_outputs": [
            {"logprobs": {"data": [-1.0, -2.0]}, "elementwise_loss": {"data": [1.0, 2.0]}},
            {"logprobs": {"data": [-0.5]}, "elementwise_loss": {"data": [0.5]}},
        ],
        "metrics": {"loss:sum": 3.5},
    }
    output = deserialize_forward_backward_output(
        tinker_proto.encode_forward_backward_output(result)
    )
    assert output.metrics == {"loss:sum": 3.5}
    assert [o["logprobs"].tolist() for o in output.loss_fn_outputs] == [[-1.0, -2.0], [-0.5]]

    sample = {
        "sequences": [{"tokens": [3, 4], "logprobs": [-0.25, -0.5], "stop_reason": "length"}],
        "prompt_logprobs": [None, -1.5],
    }
    decoded = deserialize_sample_response(tinker_proto.encode_sample_response(sample))
    (sequence,) = decoded.sequences
    assert sequence.tokens == [3, 4] and sequence.logprobs == [-0.25, -0.5]
    assert sequence.stop_reason == "length"
    assert decoded.prompt_logprobs[0] is None or math.isnan(decoded.prompt_logprobs[0])
    assert decoded.prompt_logprobs[1] == -1.5


def test_every_key_also_works_spelled_tml(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        key, row = store.create_key("alice")
        alias = tinker_key_form(key)
        assert alias.startswith("tml-") and alias[4:] == key.removeprefix("sk-fs-")
        assert store.find_key(alias).id == row.id == store.find_key(key).id
        assert store.find_key("tml-" + "x" * 40) is None
    finally:
        store.close()
