"""A Tinker protobuf tensor's declared shape is checked before anything is allocated: a tiny
body that declares a huge sparse tensor is a 400, and the server does not grow."""

from __future__ import annotations

import gc

import httpx
import numpy as np
import psutil
import pytest

from frontier_signal.server.tinker_proto import ForwardBackwardRequestPB
from tests.conftest import TINY
from tests.reliability.admission_support import make_key, start

# Decoding [1, 2e7] densely took ~1 GB before the check; a few MB of noise is allowed.
RSS_BOUND = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("proto-data")
    server = start(data_dir)
    key = make_key(data_dir, "alice")
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        created = http.post(
            "/v1/runs",
            json={"base_model": TINY, "lora_r": 4},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert created.status_code == 200, created.text
        yield server, key, created.json()["run_id"]
    server.stop()


def _body(model_id: str, shape: list[int], sparse: bool) -> bytes:
    message = ForwardBackwardRequestPB()
    message.model_id = model_id
    datum = message.data.add()
    datum.model_input.add().encoded_text.tokens = np.asarray([5, 6, 7], "<i4").tobytes()
    targets = datum.loss_fn_inputs["target_tokens"]
    targets.dtype, targets.dense = 2, np.asarray([6, 7, 8], "<i8").tobytes()
    weights = datum.loss_fn_inputs["weights"]
    weights.dtype = 1
    weights.shape.extend(shape)
    if sparse:
        weights.sparse_csr.crow_indices = np.asarray([0, 1], "<i8").tobytes()
        weights.sparse_csr.col_indices = np.asarray([0], "<i8").tobytes()
        weights.sparse_csr.values = np.asarray([1.0], "<f4").tobytes()
    else:
        weights.dense = np.asarray([1.0], "<f4").tobytes()
    message.loss_fn = "cross_entropy"
    return message.SerializeToString()


def _post(server, key, body: bytes) -> httpx.Response:
    headers = {"X-API-Key": key, "Content-Type": "application/x-protobuf"}
    return httpx.post(f"{server.base_url}/api/v1/forward_backward", content=body, headers=headers)


@pytest.mark.parametrize(
    ("shape", "sparse"), [([1, 20_000_000], True), ([20_000_000], False), ([1, -5], True)]
)
def test_a_huge_declared_shape_is_refused_before_the_server_grows(live, shape, sparse):
    server, key, model_id = live
    body = _body(model_id, shape, sparse)
    assert len(body) < 200  # a 137-byte request in the report
    gc.collect()
    before = psutil.Process().memory_info().rss  # the embedded server runs in this process
    answer = _post(server, key, body)
    grown = psutil.Process().memory_info().rss - before
    assert answer.status_code == 400, answer.text
    assert "weights" in answer.text and str(shape) in answer.text
    assert grown < RSS_BOUND, f"the server grew {grown / 2**20:.0f} MiB"


def test_a_shape_that_fits_the_datum_still_trains(live):
    server, key, model_id = live
    answer = _post(server, key, _body(model_id, [1, 3], sparse=True))
    assert answer.status_code == 200, answer.text
