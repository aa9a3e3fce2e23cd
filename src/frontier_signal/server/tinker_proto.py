"""The protobuf encoding of the Tinker-style API (tinker ≥ 0.25 speaks it on its hot paths).

One protocol, two encodings: this module only translates. A protobuf `ForwardBackwardRequest`
becomes the same JSON-shaped dict the hpcai client posts (and then the same pydantic body and
the same handler); a finished future's JSON-shaped result becomes a protobuf
`ForwardBackwardOutput` or `SampleResponse` when the poll's `Accept` asks for it. Shapes follow
tinker 0.38.0's `tinker/proto/request_conv.py` and `response_conv.py` (tinker-wire-protocol.md
§9.1, §13.5). It knows nothing about HTTP routing, the store or torch.
"""

from __future__ import annotations

import math

import numpy as np
import zstandard
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from frontier_signal.server.tinker_public_descriptor import SERIALIZED_FILE_DESCRIPTOR
from frontier_signal.service.errors import InvalidRequest

PROTO_CONTENT_TYPE = "application/x-protobuf"
# Largest forward_backward body accepted after zstd decompression (the client sends at most
# `fwdbwd_max_chunk_bytes_count` = 5 MB per chunk before compression).
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
# A loss input holds one value per token of its datum, or a few (a [tokens, k] tensor); and never
# more than this many in all. Declared shapes are checked against both before anything is
# allocated: a sparse CSR tensor names its dense shape, which a few bytes can make huge.
MAX_VALUES_PER_TOKEN = 64
MAX_TENSOR_VALUES = 1 << 22

_pool = descriptor_pool.DescriptorPool()
_file = descriptor_pb2.FileDescriptorProto.FromString(SERIALIZED_FILE_DESCRIPTOR)
_pool.Add(_file)


def _message(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"tinker_public.{name}"))


ForwardBackwardRequestPB = _message("ForwardBackwardRequest")
ForwardBackwardOutputPB = _message("ForwardBackwardOutput")
SampleResponsePB = _message("SampleResponse")

# DType enum of tinker_public.proto.
_DTYPE_FLOAT32, _DTYPE_INT64, _DTYPE_INT32, _DTYPE_BFLOAT16 = 1, 2, 3, 4
_NUMPY: dict[int, np.dtype] = {
    _DTYPE_FLOAT32: np.dtype("<f4"),
    _DTYPE_INT64: np.dtype("<i8"),
    _DTYPE_INT32: np.dtype("<i4"),
    _DTYPE_BFLOAT16: np.dtype("<u2"),
}
_STOP_REASON = {"stop": 0, "length": 1}


def is_protobuf(content_type: str | None) -> bool:
    return PROTO_CONTENT_TYPE in (content_type or "")


def decompress(body: bytes, content_encoding: str | None) -> bytes:
    """Undo `Content-Encoding: zstd` (sent when the client config's `proto_compress_fwdbwd`)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "zstd":
        raise InvalidRequest(f"Content-Encoding {encoding!r} is not supported; use zstd or none")
    try:
        return zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_DECOMPRESSED_BYTES)
    except zstandard.ZstdError as exc:
        raise InvalidRequest(f"the zstd body could not be decompressed: {exc}") from exc


# ----- request: protobuf → the JSON shape ----------------------------------------------------
def _array(raw: bytes, dtype: int, what: str) -> np.ndarray:
    numpy_dtype = _NUMPY.get(dtype)
    if numpy_dtype is None:
        raise InvalidRequest(f"{what}: unknown tensor dtype {dtype}")
    if len(raw) % numpy_dtype.itemsize:
        raise InvalidRequest(f"{what}: {len(raw)} bytes is not a whole number of {numpy_dtype}")
    values = np.frombuffer(raw, dtype=numpy_dtype)
    if dtype == _DTYPE_BFLOAT16:
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _check_shape(shape: list[int], tokens: int, what: str) -> None:
    """Refuse a declared shape before it is allocated: negative sizes, or more values than
    the datum's `tokens` can use (MAX_VALUES_PER_TOKEN each, MAX_TENSOR_VALUES in all)."""
    if any(size < 0 for size in shape):
        raise InvalidRequest(f"{what}: shape {shape} has a negative size")
    allowed = min(max(tokens, 1) * MAX_VALUES_PER_TOKEN, MAX_TENSOR_VALUES)
    declared = math.prod(shape)
    if declared > allowed:
        raise InvalidRequest(
            f"{what}: shape {shape} declares {declared} values, more than the {allowed} this "
            f"datum allows ({tokens} input tokens, at most {MAX_VALUES_PER_TOKEN} values each "
            f"and {MAX_TENSOR_VALUES} in all); send one value per input token"
        )


def _tensor(message, what: str, tokens: int) -> dict:
    """A proto Tensor (dense or sparse CSR) → `{data, dtype, shape}` with a flat data list;
    `tokens` is the datum's input length, which bounds the declared shape."""
    integer = message.dtype in (_DTYPE_INT64, _DTYPE_INT32)
    shape = list(message.shape)
    _check_shape(shape, tokens, what)
    if message.HasField("sparse_csr"):
        csr = message.sparse_csr
        values = _array(csr.values, message.dtype, what)
        crow = _array(csr.crow_indices, _DTYPE_INT64, f"{what}.crow_indices")
        col = _array(csr.col_indices, _DTYPE_INT64, f"{what}.col_indices")
        if len(shape) != 2 or len(crow) != shape[0] + 1 or len(col) != len(values):
            raise InvalidRequest(
                f"{what}: a sparse CSR tensor needs a 2-d shape and matching indices"
            )
        dense = np.zeros(shape, dtype=values.dtype)
        for row in range(shape[0]):
            start, end = int(crow[row]), int(crow[row + 1])
            if not 0 <= start <= end <= len(col) or (
                end > start and col[start:end].max() >= shape[1]
            ):
                raise InvalidRequest(f"{what}: sparse CSR indices out of range")
            dense[row, col[start:end]] = values[start:end]
        values = dense.reshape(-1)
    else:
        values = _array(message.dense, message.dtype, what)  # a view of the body: no copy
        if not shape:
            _check_shape([len(values)], tokens, what)
    if shape and math.prod(shape) != len(values):
        raise InvalidRequest(f"{what}: shape {shape} does not hold {len(values)} values")
    return {
        "data": values.tolist() if integer else values.astype(np.float64).tolist(),
        "dtype": "int64" if integer else "float32",
        "shape": shape or [len(values)],
    }


def _chunk(message, what: str) -> dict:
    kind = message.WhichOneof("chunk")
    if kind == "encoded_text":
        return {
            "type": "encoded_text",
            "tokens": _array(message.encoded_text.tokens, _DTYPE_INT32, what).tolist(),
        }
    # Images and audio are declared by the protocol; the engine has no vision or audio tower.
    return {"type": kind or "empty", "tokens": 0}


def _loss_fn_config(message) -> dict[str, float] | None:
    if not message.loss_fn_config_v2 and not message.loss_fn_config:
        return None
    config: dict[str, float] = {}
    for key, value in message.loss_fn_config_v2.items():
        if value.WhichOneof("value") != "number":
            raise InvalidRequest(
                f"loss_fn_config[{key!r}] is text; this server's losses take numbers"
            )
        config[key] = value.number
    for key, value in message.loss_fn_config.items():
        config.setdefault(key, value)  # v2 wins where both are set
    return config


def decode_forward_backward(body: bytes) -> dict:
    """A serialized `ForwardBackwardRequest` → the JSON body shape of `/forward_backward`,
    plus `forward_only` and `seq_id` (0 on the wire means "not sent")."""
    message = ForwardBackwardRequestPB()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidRequest(f"the body is not a tinker ForwardBackwardRequest: {exc}") from exc
    data = []
    for index, datum in enumerate(message.data):
        where = f"data[{index}]"
        chunks = [_chunk(c, f"{where}.model_input[{i}]") for i, c in enumerate(datum.model_input)]
        tokens = sum(len(c["tokens"]) for c in chunks if isinstance(c["tokens"], list))
        inputs = {
            name: _tensor(tensor, f"{where}.loss_fn_inputs.{name}", tokens)
            for name, tensor in datum.loss_fn_inputs.items()
        }
        data.append({"model_input": {"chunks": chunks}, "loss_fn_inputs": inputs})
    return {
        "model_id": message.model_id,
        "seq_id": message.seq_id or None,
        "forward_only": message.forward_only,
        "forward_backward_input": {
            "data": data,
            "loss_fn": message.loss_fn or "cross_entropy",
            "loss_fn_config": _loss_fn_config(message),
        },
    }


# ----- results: the JSON shape → protobuf ----------------------------------------------------
def _float32_bytes(values) -> bytes:
    return np.asarray([math.nan if v is None else v for v in values], dtype="<f4").tobytes()


def encode_forward_backward_output(result: dict) -> bytes:
    """`{loss_fn_output_type, loss_fn_outputs: [{name: TensorData}], metrics}` → one batched
    ArrayRecord (offsets count bytes, one entry per datum boundary)."""
    message = ForwardBackwardOutputPB()
    message.loss_fn_output_type = result.get("loss_fn_output_type") or "scalar"
    for key, value in (result.get("metrics") or {}).items():
        message.metrics[key] = float(value)
    outputs = result.get("loss_fn_outputs") or []
    record = message.loss_fn_outputs.add()
    record.type_tag = message.loss_fn_output_type
    record.num_datums = len(outputs)
    names = list(outputs[0]) if outputs else []
    for name in names:
        pieces = [_float32_bytes(output[name]["data"]) for output in outputs]
        offsets = np.cumsum([0] + [len(piece) for piece in pieces], dtype=np.int64)
        field = record.fields[name]
        field.data = b"".join(pieces)
        field.offsets = offsets.astype("<i8").tobytes()
        field.dtype = _DTYPE_FLOAT32
    return message.SerializeToString()


def encode_sample_response(result: dict) -> bytes:
    """`{sequences: [{tokens, logprobs, stop_reason}], prompt_logprobs}` → SampleResponse;
    a null prompt logprob (the first token's) travels as NaN, which the client reads as None."""
    message = SampleResponsePB()
    for sequence in result.get("sequences") or []:
        out = message.sequences.add()
        out.stop_reason = _STOP_REASON[sequence["stop_reason"]]
        out.tokens = np.asarray(sequence["tokens"], dtype="<i4").tobytes()
        out.logprobs = _float32_bytes(sequence.get("logprobs") or [])
    prompt_logprobs = result.get("prompt_logprobs")
    if prompt_logprobs is not None:
        message.prompt_logprobs = _float32_bytes(prompt_logprobs)
    return message.SerializeToString()
