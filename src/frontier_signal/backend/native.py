"""Our C++ ops: the decode layers (`csrc/llama_step.cpp`) and, for bf16 training on CPU,
attention's softmax (`csrc/attention.cpp`), RMSNorm (`csrc/rms_norm.cpp`), the MLP activation
(`csrc/silu_gate.cpp`), the LoRA terms (`csrc/lora.cpp`) and the 8-bit AdamW step
(`csrc/adamw_8bit.cpp`), and for the quantized decode the 4-bit matmul (`csrc/int4_linear.cpp`)
and the checked 8-bit lm_head (`csrc/int8_head.cpp`); built on first use, loaded as torch ops.

The ops are compiled with torch's extension builder (g++ and ninja, ~20 s once) into torch's
extensions folder (`TORCH_EXTENSIONS_DIR`, by default `~/.cache/torch_extensions`), keyed by the
source, so later processes only load it (~1 s). Until it is loaded, and wherever it cannot be
built (no compiler, a failed build: logged once), decoding takes the Python step and training
attends through torch's SDPA: the same results within bf16 rounding, slower. The AVX512 kernels
are compiled in only where the CPU has those extensions; elsewhere the ops use ATen's matmuls
and scalar loops.
`scripts/setup` builds it, and an engine starts loading it in the background on its first
model load. Decoding does not wait for it (the Python step meanwhile), but training does
(`ops()` joins the load): its kernels round differently from torch's, and a run's steps must
not depend on when the load finished (the same steps, the same weights, in any process).

`FRONTIER_SIGNAL_NATIVE=0` turns it off (then nothing is built).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from frontier_signal.backend.decode_lora import GROUPS

if TYPE_CHECKING:
    from frontier_signal.backend.lora import LoraLinear

logger = logging.getLogger(__name__)

SOURCES = [
    Path(__file__).parent / "csrc" / name
    for name in (
        "llama_step.cpp",
        "attention.cpp",
        "rms_norm.cpp",
        "silu_gate.cpp",
        "lora.cpp",
        "adamw_8bit.cpp",
        "int4_linear.cpp",
        "int8_head.cpp",
        "decode_lora.cpp",
        "decode_attention.cpp",
    )
]
NAME = "frontier_signal_native"

_lock = threading.Lock()
_state: dict[str, Any] = {"ops": None, "error": None, "thread": None}


def enabled() -> bool:
    return os.environ.get("FRONTIER_SIGNAL_NATIVE", "1") not in ("0", "false", "no")


def _flags() -> list[str]:
    """-O3, OpenMP (at::parallel_for runs on torch's own libgomp, which the op links through
    libtorch), and the vector extensions this CPU has (the build is per machine)."""
    flags = ["-O3", "-fopenmp", "-std=c++17"]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma", "-mf16c"]
    if capability == "AVX512":
        flags += ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"]
        if "avx512_bf16" in _cpu_flags():
            flags.append("-mavx512bf16")  # the bf16 matrix-vector kernel (`linear`)
    return flags


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _build() -> Any:
    from torch.utils import cpp_extension

    # torch's builder runs `ninja` from PATH: the `ninja` package puts it beside this Python.
    here = str(Path(sys.executable).parent)
    if shutil.which("ninja") is None and shutil.which("ninja", path=here):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")

    flags = _flags()
    cpp_extension.load(
        NAME
        + "_"
        + torch.backends.cpu.get_cpu_capability().lower()
        + ("_bf16" if "-mavx512bf16" in flags else ""),
        sources=[str(source) for source in SOURCES],
        extra_cflags=flags,
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.frontier_signal


def _load() -> None:
    try:
        ops = _build()
    except Exception as error:  # no compiler, a failed build, ...: decode in Python
        logger.warning("native decode layers unavailable, decoding in Python: %s", error)
        _state["error"] = error
    else:
        _state["ops"] = ops


def ops(wait: bool = True) -> Any | None:
    """`torch.ops.frontier_signal` once the op is loaded, else None.

    `wait=False` starts the build or load in a background thread (once) and returns None until
    it is done; `wait=True` builds or loads it here.
    """
    if _state["ops"] is not None or _state["error"] is not None or not enabled():
        return _state["ops"]
    if not wait:
        with _lock:
            if _state["thread"] is None:
                thread = threading.Thread(target=ops, name="native-build", daemon=True)
                _state["thread"] = thread
                thread.start()
        return None
    with _lock:
        if _state["ops"] is None and _state["error"] is None:
            _load()
    return _state["ops"]


def training_ops(device: torch.device, dtype: torch.dtype) -> Any | None:
    """The ops for a bf16 training step on CPU (attention, norms, MLP, LoRA, unembedding),
    joining their load; None elsewhere (other dtypes and devices keep torch's kernels)."""
    if device.type != "cpu" or dtype != torch.bfloat16:
        return None
    return ops()


def with_bf16_kernels(loaded: Any | None) -> Any | None:
    """`loaded` (our ops) where this build has the AVX512-BF16 kernels, else None: the LoRA
    kernels and our 4-bit decode layout need them (elsewhere their callers keep torch's path)."""
    return loaded if loaded is not None and _built_with_bf16(loaded) else None


@functools.cache
def _built_with_bf16(loaded: Any) -> bool:
    return bool(loaded.has_bf16_kernel())


def fp32_ops(tensors: Sequence[torch.Tensor | None]) -> Any | None:
    """The ops for passes over fp32 master weights or gradients (the 8-bit AdamW step, the
    gradient statistics), joining their load: where every tensor is a contiguous fp32 CPU one;
    None elsewhere (a missing gradient, CUDA, other layouts keep the torch path)."""
    for tensor in tensors:
        if tensor is None or tensor.device.type != "cpu" or tensor.dtype != torch.float32:
            return None
        if not tensor.is_contiguous():
            return None
    return ops() if tensors else None


# (A stacked [R, in], pieces (h_lo, h_hi, o_lo, width, B)): a group's terms in the form the
# native decode layers take (`NativeStep`), without zeros. B (the projection's B.T with
# its scale, [h_hi - h_lo, width]) comes with `tiled` in 64-column tiles with the ranks in
# pairs, [ceil(width / 64), ceil(ranks / 2), 64, 2], zero-padded: a task of the native second
# pass reads one contiguous block, and `vdpbf16ps` multiplies a pair of ranks at once.
NativeTerm = tuple[torch.Tensor, list[tuple[int, int, int, int, torch.Tensor]]]
NATIVE_TILE = 64  # csrc/decode_lora.cpp's kColumns


def native_tiles(B: torch.Tensor) -> torch.Tensor:
    """[ranks, width] -> [ceil(width / 64), ceil(ranks / 2), 64, 2], zeros where it runs out."""
    ranks, width = B.shape
    tiles = -(-width // NATIVE_TILE)
    padded = F.pad(B, (0, tiles * NATIVE_TILE - width, 0, ranks % 2))
    return padded.view(-1, 2, tiles, NATIVE_TILE).permute(2, 0, 3, 1).contiguous()


def native_term(
    linears: list[LoraLinear], key: str, dtype, tiled: bool = True
) -> NativeTerm | None:
    """Run `key`'s term of one group (None where none of its linears has the adapter); with
    `tiled` False B stays [ranks, width] (the lm_head's, which `add_lora` applies)."""
    pairs = [layer.adapters.get(key) for layer in linears]
    present = [pair for pair in pairs if pair is not None]
    if not present:
        return None
    A = torch.cat([pair.lora_A.detach() for pair in present]).to(dtype).contiguous()
    pieces, hidden, column = [], 0, 0
    for layer, pair in zip(linears, pairs, strict=True):
        if pair is not None:
            rank, width = pair.lora_A.shape[0], layer.out_features
            B = (pair.lora_B.detach() * pair.scale).to(dtype).t()
            B = native_tiles(B) if tiled else B.contiguous()
            pieces.append((hidden, hidden + rank, column, width, B))
            hidden += rank
        column += layer.out_features
    return A, pieces


class NativeStep:
    """`decode_layers`' arguments for one `LlamaDecoder` (flattened once per batch).

    matmuls: per layer and group (`decode_lora.GROUPS` order) three optional tensors, as
    `llama_decode.Matmul` with None for what a form lacks. LoRA: per layer and group, the number
    of terms, then per term its rows (start, end) and number of pieces, then per piece
    (h_lo, h_hi, o_lo, width) in `meta`; per term A then each piece's B in `tensors` (B as
    `native_term` lays it out: 64-column tiles, the ranks in pairs).
    """

    def __init__(self, ops, weights, matmuls: list[dict], lora: list[dict], kv, cos, sin, valid):
        self.ops = ops
        self.norms = [t for layer in weights.layers for t in (layer.input_norm, layer.post_norm)]
        self.matmuls: list[torch.Tensor | None] = []
        for groups in matmuls:
            for group in GROUPS:
                matmul = groups[group]
                self.matmuls += [*matmul, None] if len(matmul) == 2 else list(matmul)
        self.tensors: list[torch.Tensor] = []
        self.meta: list[int] = []
        for groups in lora[: len(weights.layers)]:
            for group in GROUPS:
                self.meta.append(len(groups[group]))
                for A, pieces, start, end in groups[group]:
                    self.meta += [start, end, len(pieces)]
                    self.tensors.append(A)
                    for h_lo, h_hi, o_lo, width, B in pieces:
                        self.meta += [h_lo, h_hi, o_lo, width]
                        self.tensors.append(B)
        self.kv, self.cos, self.sin = kv, cos, sin
        self.valid = None if valid is None else valid.reshape(valid.shape[0], valid.shape[-1])
        self.shape = (weights.num_heads, weights.num_kv_heads, weights.eps)

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        """x @ weight.T (+ bias): our bf16 matrix-vector kernel for a few rows, else ATen's."""
        return self.ops.linear(x, weight, bias)

    def __call__(self, x: torch.Tensor, slot: int, positions: torch.Tensor) -> torch.Tensor:
        """The hidden state [B, D] after every layer, for embeddings x at cache `slot`."""
        heads, kv_heads, eps = self.shape
        return self.ops.decode_layers(
            x, self.norms, self.matmuls, self.tensors, self.meta, self.kv, self.cos, self.sin,
            positions, self.valid, slot, heads, kv_heads, eps,
        )  # fmt: skip


def main() -> None:
    """`python -m frontier_signal.backend.native`: build (or load) the op, say whether it works."""
    logging.basicConfig(level=logging.INFO)
    loaded = ops()
    status = "ready" if loaded is not None else f"unavailable ({_state['error']})"
    print("native decode layers:", status)


if __name__ == "__main__":
    main()
