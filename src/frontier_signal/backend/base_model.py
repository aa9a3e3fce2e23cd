"""A loaded base model shared by every run on it, and the chunked log-prob computation.

The base weights are frozen and stored once in the compute dtype (bf16 where the hardware has
fast bf16 matmuls, else fp32); every LoRA-able linear is wrapped in a `LoraLinear` so a batch
can mix rows of many runs.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedTokenizerBase

from frontier_signal.backend import cpu_attention, models, native
from frontier_signal.backend.fused_mlp import install_fused_mlps
from frontier_signal.backend.fused_norm import install_fused_norms
from frontier_signal.backend.lora import (
    LoraLinear,
    Routing,
    Segment,
    install_lora_layers,
    layer_recompute,
)
from frontier_signal.backend.unembed import linear_target_logprobs
from frontier_signal.engine.errors import EngineError, InvalidInputError

if TYPE_CHECKING:  # imported where used: it is only needed once decoding starts
    from frontier_signal.backend.llama_decode import LlamaWeights

logger = logging.getLogger(__name__)

# Up to this row length, CPU training attends with the plain matmul-softmax-matmul kernel
# rather than the flash one: flash's backward has a fixed cost per block that short rows do not
# amortise (bf16, 1 thread, 9 heads of 64, forward + backward: 8x62 23.8 vs 11.6 ms, 8x128 46 vs
# 29 ms, 8x256 even, 2x1024 145 vs 459 ms). The attention weights it keeps are T^2 per head.
MATH_ATTENTION_MAX_LEN = 192

# A training batch keeps its tokens' vocabulary probabilities for backward up to this many bytes
# (2,048 tokens of SmolLM2 in bf16: 200 MB); chunks beyond it recompute them in backward.
KEEP_PROBS_BYTES = 512 * 2**20


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX (bf16 matmuls ~4x faster than fp32 there)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """`auto` → bf16 on CUDA with bf16 support or a CPU with AVX512-BF16/AMX, else fp32."""
    if dtype in ("float32", "fp32"):
        return torch.float32
    if dtype in ("bfloat16", "bf16"):
        return torch.bfloat16
    if dtype != "auto":
        raise ValueError(f"unknown dtype {dtype!r}; use auto, bfloat16 or float32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


@dataclass
class BaseModel:
    """One frozen base model in memory plus its LoRA layers and tokenizer."""

    name: str
    # A transformers *ForCausalLM with LoraLinear layers installed. Any: torch types every
    # attribute of a Module as `Tensor | Module`, so its config and submodules need no casts.
    model: Any
    tokenizer: PreTrainedTokenizerBase
    layers: dict[str, LoraLinear]
    routing: Routing
    device: torch.device
    dtype: torch.dtype
    _checkpointing: bool = False
    fast_decode: bool = True  # False: decode through the HF forward (a fallback, and benchmarks)
    # Opt-in: decode with int8 weight-only copies of the weights (CPU only; ~2x faster at batch
    # 1, outputs differ slightly from the exact weights). Prefill and training stay exact.
    decode_int8: bool = False
    # Decode with the 4-bit codes of a model that shipped as a Q4_1 GGUF (CPU, bf16): the file's
    # own values at a quarter of the bf16 bytes (docs/engine.md, "Decode weights").
    decode_4bit: bool = False
    decode_4bit_ready: bool | None = None  # None: not tried yet
    _decode_weights: LlamaWeights | None = None

    def decode_weights(self) -> LlamaWeights | None:
        """The fused-weight view the fast decode step uses, or None where it does not apply.

        Built on first use; it turns the q|k|v and gate|up base weights into views of fused
        tensors (same memory), so the model must not be moved to another device afterwards.
        """
        from frontier_signal.backend import llama_decode

        if not self.fast_decode or not llama_decode.supports(self.model):
            return None
        weights = self._decode_weights
        if weights is None:
            weights = self._decode_weights = llama_decode.LlamaWeights(self.model, self.layers)
        if self.decode_int8 and self.device.type == "cpu":
            weights.quantize_int8()
        if self.decode_4bit and self.decode_4bit_ready is None:
            self.decode_4bit_ready = self._pack_4bit(weights)  # tried once, when first wanted
        return weights

    def _pack_4bit(self, weights: LlamaWeights) -> bool:
        if self.device.type != "cpu" or self.dtype != torch.bfloat16:
            return False
        reader = models.gguf_weights(self.name)
        if reader is None:
            return False
        with reader() as get:
            packed = weights.pack_4bit(get)
        logger.info("%s: %d weight groups decode from their GGUF 4-bit codes", self.name, packed)
        return packed > 0

    @property
    def decode_mode(self) -> str:
        """Which weights the fast decode step uses: `int8`, `4bit` or `exact`."""
        if self.decode_int8 and self.device.type == "cpu":
            return "int8"
        if self.decode_4bit and self.decode_4bit_ready:
            return "4bit"
        return "exact"

    @classmethod
    def load(cls, name: str, device: torch.device, dtype: torch.dtype) -> BaseModel:
        """Load a registered model.

        Raises:
            ModelNotFoundError: unknown name or missing files.
            InvalidInputError: the files are not a causal LM this engine loads (a folder whose
                config.json is something else): the name cannot be used, say so as a 4xx.
        """
        try:
            model = models.load_hf_model(name, dtype=dtype).to(device)
            tokenizer = models.load_tokenizer(name)
        except EngineError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(
                f"base model {name!r} cannot be loaded: its files are not a causal language "
                f"model this server runs ({type(exc).__name__}: {str(exc)[:200]}); choose "
                "another base model, or ask the operator to fix its folder"
            ) from None
        routing = Routing()
        layers = install_lora_layers(model, routing)
        install_fused_norms(model)
        install_fused_mlps(model)
        if device.type == "cpu" and dtype == torch.bfloat16:
            native.ops(wait=False)  # the C++ decode layers, loaded (or built) in the background
        logger.info("loaded base model %s on %s in %s", name, device, dtype)
        return cls(name, model, tokenizer, layers, routing, device, dtype)

    @property
    def context_length(self) -> int:
        """The longest sequence (prompt + generated) the model takes."""
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def lm_head(self) -> LoraLinear:
        return self.layers["lm_head"]

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id or 0)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled == self._checkpointing:
            return
        if enabled:  # per decoder layer; its recompute skips what only feeds its output
            self.model.activation_checkpointing_enable(
                {"use_reentrant": False, "context_fn": _recompute_contexts}
            )
        else:
            self.model.activation_checkpointing_disable()
        self._checkpointing = enabled

    def activation_bytes(self, rows: int, length: int) -> int:
        """Activations a training forward keeps for backward without checkpointing (an estimate).

        Per token and decoder layer: the LoRA inputs and the attention and MLP tensors that
        autograd saves, about 8 hidden-size and 4 MLP-size vectors in the compute dtype (the
        frozen base matmuls save nothing for their own weights); with the matmul attention of
        short rows (`training_attention`), also each head's attention weights over the row.
        Log-prob chunks are apart.
        """
        config = self.model.config
        per_token_layer = 8 * config.hidden_size + 4 * config.intermediate_size
        if self._attention_kernel(length) != "flash":
            per_token_layer += config.num_attention_heads * length
        element = torch.tensor([], dtype=self.dtype).element_size()
        return rows * length * config.num_hidden_layers * per_token_layer * element

    def training_attention(self, longest: int) -> contextlib.AbstractContextManager:
        """The attention kernel a training forward and its backward (which may recompute the
        forward) both run under, for rows of up to `longest` tokens."""
        kernel = self._attention_kernel(longest)
        if kernel == "native":
            return cpu_attention.use(self.model.config)
        if kernel == "math":
            return sdpa_kernel([SDPBackend.MATH])
        return contextlib.nullcontext()

    def prompt_attention(self) -> contextlib.AbstractContextManager:
        """The attention a sampling prompt pass runs under: ours (cpu_attention.py, the training
        forward's kernel) where it runs, bf16 on CPU with our op loaded; else the model's own."""
        if cpu_attention.available(self.device, self.dtype):
            return cpu_attention.use(self.model.config)
        return contextlib.nullcontext()

    def _attention_kernel(self, length: int) -> str:
        """The training attention for rows of `length` tokens: `native` (cpu_attention.py:
        bf16 on CPU with our op loaded), `math` (SDPA's matmul kernel) or `flash` (SDPA's own
        choice); the first two keep each head's attention weights for backward."""
        if self.device.type != "cpu":
            return "flash"
        if length <= cpu_attention.MAX_KEYS and cpu_attention.available(self.device, self.dtype):
            return "native"
        return "math" if length <= MATH_ATTENTION_MAX_LEN else "flash"

    def hidden_states(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """Final hidden states [B, T, D] (no logits: the unembedding is done in chunks)."""
        return self.model.model(input_ids=input_ids, **kwargs).last_hidden_state


def _recompute_contexts():
    """torch.utils.checkpoint's `context_fn`: nothing around the forward, `layer_recompute`
    around the recompute (each checkpoint wraps exactly one decoder layer)."""
    return contextlib.nullcontext(), layer_recompute()


def _slice_segments(segments: list[Segment], start: int, end: int) -> list[Segment]:
    """Segments restricted to rows [start, end), re-based to start at 0."""
    out = []
    for key, s, e in segments:
        s, e = max(s, start), min(e, end)
        if s < e:
            out.append((key, s - start, e - start))
    return out


def _chunk_target_logprobs(
    hidden_ND: torch.Tensor, targets_N: torch.Tensor, lm_head: LoraLinear, segments: list[Segment]
) -> torch.Tensor:
    logits_NV = lm_head.forward_segments(hidden_ND, segments).float()
    # cross_entropy's fused log-softmax kernel: fewer passes over [N, vocab] than gather - lse.
    return -F.cross_entropy(logits_NV, targets_N, reduction="none")


def target_logprobs(
    base: BaseModel,
    hidden_ND: torch.Tensor,
    targets_N: torch.Tensor,
    segments: list[Segment],
    chunk_tokens: int = 1024,
) -> torch.Tensor:
    """log p(target) for flat token rows, `chunk_tokens` at a time, in fp32.

    Full-vocabulary logits exist for one chunk at a time. Without a LoRA on `lm_head` the
    unembedding runs through `unembed.linear_target_logprobs`, which keeps each chunk's
    probabilities for backward while they fit `KEEP_PROBS_BYTES`; with one, each chunk is
    recomputed in backward (activation checkpointing), so the batch never holds them all.
    """
    lm_head = base.lm_head
    frozen = not any(key in lm_head.adapters for key, _, _ in segments)  # the weight alone
    weight_VD = lm_head.base.weight
    pieces, kept = [], 0
    for start in range(0, hidden_ND.shape[0], chunk_tokens):
        end = min(start + chunk_tokens, hidden_ND.shape[0])
        hidden, targets = hidden_ND[start:end], targets_N[start:end]
        if frozen:
            size = (end - start) * weight_VD.shape[0] * weight_VD.element_size()
            keep = kept + size <= KEEP_PROBS_BYTES
            kept += size if keep else 0
            pieces.append(linear_target_logprobs(hidden, weight_VD, targets, keep))
            continue
        args = (hidden, targets, lm_head, _slice_segments(segments, start, end))
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_target_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_target_logprobs(*args))
    return torch.cat(pieces) if pieces else hidden_ND.new_zeros(0, dtype=torch.float32)
