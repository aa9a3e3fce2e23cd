"""Multi-run LoRA: one frozen base linear, many per-run adapters, routed by batch rows.

PEFT keeps one active adapter per model (mixed-adapter batches are inference-only there), so
this is written by hand: a batch holds the rows of several runs in contiguous segments, the base
matmul runs once for the whole batch, and each run's low-rank term runs only on its own rows
(the "sub-batch" strategy of DESIGN/peers §3.4). Each run owns plain fp32 `nn.Parameter`s, so its
optimizer, gradient and checkpoint stay isolated and ranks may differ between runs.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from frontier_signal.backend import fused_lora
from frontier_signal.engine.types import LoraSpec

Segment = tuple[str, int, int]  # (adapter key, start row, end row)
_uids = itertools.count(1)


@dataclass
class Routing:
    """Which rows of the current batch belong to which adapter; shared by every LoRA layer."""

    segments: list[Segment] = field(default_factory=list)

    @contextmanager
    def use(self, segments: list[Segment]) -> Iterator[None]:
        previous, self.segments = self.segments, segments
        try:
            yield
        finally:
            self.segments = previous


@dataclass
class LoraPair:
    """One adapter on one linear layer: `y += scale * dropout(x) @ A.T @ B.T`."""

    lora_A: nn.Parameter  # [rank, in_features]
    lora_B: nn.Parameter  # [out_features, rank]
    scale: float
    dropout: float


# Model types whose MLP output projection feeds only the residual sum that leaves the decoder
# layer (no norm after it), so a layer's recompute has no use for its base output.
RESIDUAL_DOWN_PROJ = {"llama", "mistral", "qwen2"}
_recompute = threading.local()


@contextmanager
def layer_recompute() -> Iterator[None]:
    """Entered by the activation checkpoint of one decoder layer while it recomputes in backward
    (`BaseModel.set_gradient_checkpointing`). Backward needs the activations the recompute saves,
    not the layer's output; the down projection's base matmul (a quarter of the layer's matmul
    work) only feeds that output, so `LoraLinear.output_leaves_layer` layers skip it here."""
    before = getattr(_recompute, "active", False)
    _recompute.active = True
    try:
        yield
    finally:
        _recompute.active = before


class LoraLinear(nn.Module):
    """A frozen `nn.Linear` plus any number of LoRA adapters, selected per batch row.

    Adapters are not registered as submodules: the model's own parameters stay the base weights
    only, and each run's parameters are owned by its `Adapter`.
    """

    def __init__(self, base: nn.Linear, routing: Routing):
        super().__init__()
        self.base = base
        self.routing = routing
        self.adapters: dict[str, LoraPair] = {}
        self.output_leaves_layer = False  # see `layer_recompute`

    def _skips_base(self) -> bool:
        """In a layer's recompute (`layer_recompute`), for the C++ path only: its autograd node
        saves the same tensors either way, as checkpoint requires (autograd's would not)."""
        return self.output_leaves_layer and getattr(_recompute, "active", False)

    @property
    def weight(self) -> torch.Tensor:  # transformers reads `.weight` (e.g. to tie embeddings)
        return self.base.weight

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_segments(x, self.routing.segments)

    def forward_segments(self, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        """Base output for all rows of `x` (dim 0), plus each segment's adapter on its rows."""
        active = [
            (self.adapters[key], start, end) for key, start, end in segments if key in self.adapters
        ]
        if not active:
            return self.base(x)
        runs = _uniform_runs(active)
        if len(runs) == 1 and runs[0][0][1] == 0 and runs[0][-1][2] == x.shape[0]:
            # One delta (or one batched delta of N runs' equal steps) over every row.
            pairs = [pair for pair, _, _ in runs[0]]
            fused = fused_lora.linear(self.base, x, pairs, self.training, self._skips_base())
            if fused is not None:
                return fused
            if len(pairs) == 1:
                return self.base(x) + self._delta(pairs[0], x)
            return self.base(x) + self._batched_delta(pairs, x)
        y = self.base(x).clone()
        for run in runs:
            if len(run) == 1:
                pair, start, end = run[0]
                y[start:end] += self._delta(pair, x[start:end])
            else:
                start, end = run[0][1], run[-1][2]
                y[start:end] += self._batched_delta([pair for pair, _, _ in run], x[start:end])
        return y

    def _batched_delta(self, pairs: list[LoraPair], x: torch.Tensor) -> torch.Tensor:
        """The deltas of G adapters of one rank on G equal, adjacent row blocks of `x`: two
        batched matmuls instead of 2·G small ones (a mixed batch of many runs' short requests
        spent as long in LoRA ops as in the base model before)."""
        groups = len(pairs)
        x_GNI = x.reshape(groups, -1, x.shape[-1])
        if pairs[0].dropout > 0 and self.training:
            x_GNI = F.dropout(x_GNI, p=pairs[0].dropout, training=True)
        delta_GNO = grouped_lora_delta(x_GNI, pairs)
        return delta_GNO.reshape(*x.shape[:-1], delta_GNO.shape[-1])

    def _delta(self, pair: LoraPair, x: torch.Tensor) -> torch.Tensor:
        if pair.dropout > 0 and self.training:
            x = F.dropout(x, p=pair.dropout, training=True)
        delta = grouped_lora_delta(x.reshape(1, -1, x.shape[-1]), [pair])
        return delta.reshape(*x.shape[:-1], delta.shape[-1])


class _GroupedLoraDelta(torch.autograd.Function):
    """`scale * (x_g @ A_g.T) @ B_g.T` for G adapters on G row blocks, in the activations'
    dtype, from fp32 master weights, with a hand-written backward.

    Through autograd the same costs per adapter and layer a cast of A and of B, a scale of B,
    their stacking, and in backward the mirror of each (the stack's slices, the casts back):
    ~20 small ops per adapter where four batched matmuls do the work. Here the forward casts
    each weight once into a stacked buffer and scales the small rank-sized hidden state (in
    fp32, each adapter by its own scale); the
    backward is four batched matmuls and one cast of each gradient to fp32.
    """

    @staticmethod
    def forward(ctx, x_GNI, scale_G11, groups: int, *weights):
        a_GRI = _stacked(weights[:groups], x_GNI.dtype)
        b_GOR = _stacked(weights[groups:], x_GNI.dtype)
        hidden_GNR = torch.bmm(x_GNI, a_GRI.transpose(1, 2)).mul_(scale_G11)
        ctx.save_for_backward(x_GNI, hidden_GNR, a_GRI, b_GOR, scale_G11)
        return torch.bmm(hidden_GNR, b_GOR.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad_GNO):
        x_GNI, hidden_GNR, a_GRI, b_GOR, scale_G11 = ctx.saved_tensors
        grad_GNO = grad_GNO.to(x_GNI.dtype)
        grad_b_GOR = torch.bmm(grad_GNO.transpose(1, 2), hidden_GNR)
        grad_hidden_GNR = torch.bmm(grad_GNO, b_GOR).mul_(scale_G11)
        grad_a_GRI = torch.bmm(grad_hidden_GNR.transpose(1, 2), x_GNI)
        grad_x = torch.bmm(grad_hidden_GNR, a_GRI) if ctx.needs_input_grad[0] else None
        grads_a = [g.float() for g in grad_a_GRI.unbind(0)]
        grads_b = [g.float() for g in grad_b_GOR.unbind(0)]
        return (grad_x, None, None, *grads_a, *grads_b)


def _stacked(weights, dtype: torch.dtype) -> torch.Tensor:
    """The weights as one [G, *shape] tensor in `dtype`: one cast-copy each."""
    out = torch.empty((len(weights), *weights[0].shape), dtype=dtype, device=weights[0].device)
    for index, weight in enumerate(weights):
        out[index].copy_(weight.detach())
    return out


def grouped_lora_delta(x_GNI: torch.Tensor, pairs: list[LoraPair]) -> torch.Tensor:
    """The LoRA deltas [G, N, out] of `pairs` (one rank each) on `x_GNI`'s G row blocks."""
    groups = len(pairs)
    weights = [pair.lora_A for pair in pairs] + [pair.lora_B for pair in pairs]
    scales = torch.tensor([pair.scale for pair in pairs], device=x_GNI.device)[:, None, None]
    return _GroupedLoraDelta.apply(x_GNI, scales, groups, *weights)


def _uniform_runs(
    active: list[tuple[LoraPair, int, int]],
) -> list[list[tuple[LoraPair, int, int]]]:
    """Split segments into maximal runs of adjacent, equally long segments whose adapters
    share rank and dropout: each such run can be computed as one batched matmul."""
    runs: list[list[tuple[LoraPair, int, int]]] = []
    for item in active:
        pair, start, end = item
        if runs:
            last_pair, last_start, last_end = runs[-1][-1]
            if (
                start == last_end
                and end - start == last_end - last_start
                and pair.lora_A.shape == last_pair.lora_A.shape
                and pair.lora_B.shape == last_pair.lora_B.shape
                and pair.dropout == last_pair.dropout
            ):
                runs[-1].append(item)
                continue
        runs.append([item])
    return runs


def install_lora_layers(model: nn.Module, routing: Routing) -> dict[str, LoraLinear]:
    """Wrap every LoRA-able linear of a Llama-style model; returns them by module path.

    Module paths are the transformers ones (`model.layers.0.self_attn.q_proj`, `lm_head`), which
    is what PEFT's checkpoint keys are built from.
    """
    from frontier_signal.engine.types import ALL_TARGET_MODULES

    residual_down = getattr(model.config, "model_type", None) in RESIDUAL_DOWN_PROJ
    layers: dict[str, LoraLinear] = {}
    for name, module in list(model.named_modules()):
        short = name.rsplit(".", 1)[-1]
        if short in ALL_TARGET_MODULES and isinstance(module, nn.Linear):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            wrapped = LoraLinear(module, routing)
            wrapped.output_leaves_layer = name.endswith("mlp.down_proj") and residual_down
            setattr(parent, short, wrapped)
            layers[name] = wrapped
    return layers


# Bytes held per LoRA parameter: the fp32 weight and its gradient, plus the optimizer's state
# (AdamW: two fp32 moments; adamw_8bit: two 1-byte moments + a scale per 256; SGD: none).
BYTES_PER_PARAM = {"adamw": 16, "adamw_8bit": 10, "sgd": 8}


def adapter_param_count(rank: int, target_modules, layers: dict[str, LoraLinear]) -> int:
    """How many parameters an adapter of `rank` on `target_modules` has on these layers
    (A: rank x in, B: out x rank per targeted linear), without allocating any."""
    return sum(
        rank * (layer.in_features + layer.out_features)
        for name, layer in layers.items()
        if name.rsplit(".", 1)[-1] in target_modules
    )


class Adapter:
    """One run's LoRA parameters across the model, created from a `LoraSpec` and a seed.

    Init follows PEFT's default: A ~ kaiming-uniform(a=sqrt(5)), B = 0, so a new adapter
    leaves the base model's outputs unchanged.
    """

    def __init__(
        self, key: str, spec: LoraSpec, layers: dict[str, LoraLinear], device, init: bool = True
    ):
        self.key = key
        self.spec = spec
        self.uid = next(_uids)  # process-unique: a replaced adapter never looks like the old one
        self.frozen = False  # loaded for sampling only: its weights never change
        self.base_name = ""  # the base model it is attached to, where the owner records it
        self.pairs: dict[str, LoraPair] = {}
        generator = torch.Generator(device="cpu").manual_seed(spec.seed)
        for name, layer in layers.items():
            if name.rsplit(".", 1)[-1] not in spec.target_modules:
                continue
            lora_A = torch.empty(spec.rank, layer.in_features)
            lora_B = torch.empty(layer.out_features, spec.rank)
            if init:  # else the caller loads the weights (a frozen checkpoint)
                bound = 1.0 / math.sqrt(layer.in_features)  # kaiming_uniform_(a=sqrt(5)) bound
                lora_A.uniform_(-bound, bound, generator=generator)
                lora_B.zero_()
            self.pairs[name] = LoraPair(
                nn.Parameter(lora_A.to(device)),
                nn.Parameter(lora_B.to(device)),
                spec.scale,
                spec.dropout,
            )
        self._layers = {name: layers[name] for name in self.pairs}

    def attach(self) -> None:
        for name, pair in self.pairs.items():
            self._layers[name].adapters[self.key] = pair

    def detach(self) -> None:
        for layer in self._layers.values():
            layer.adapters.pop(self.key, None)

    def parameters(self) -> list[nn.Parameter]:
        return [p for pair in self.pairs.values() for p in (pair.lora_A, pair.lora_B)]

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """PEFT key names: `base_model.model.<module>.lora_A.weight`."""
        for name, pair in self.pairs.items():
            yield f"base_model.model.{name}.lora_A.weight", pair.lora_A
            yield f"base_model.model.{name}.lora_B.weight", pair.lora_B

    def identity(self) -> str:
        """A string that changes whenever the weights may have: a frozen adapter is its key
        (folder + file stamp, stable across eviction and reload); a run's adapter adds its
        object and the parameters' in-place version counters, which every optimizer step and
        weight load bump. The prefix cache keys KV blocks by it."""
        if self.frozen:
            return self.key
        versions = sum(p._version for p in self.parameters())
        return f"{self.key}#{self.uid}.{versions}"

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
