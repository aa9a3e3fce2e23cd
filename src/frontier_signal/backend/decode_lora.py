"""Each run's LoRA weights laid out for the fused decode matmuls, cached between calls.

The decode step multiplies q|k|v (and gate|up) in one base matmul, so a run's LoRA terms for a
group are applied together too: the group's A matrices stacked ([sum of ranks, in]) and its B
matrices placed block-diagonally ([sum of outs, sum of ranks], zeros elsewhere), with the LoRA
scale folded in and cast to the compute dtype, as `LoraLinear._delta` does. Two small matmuls per
group instead of two per projection; the zero blocks add exact zeros.

Building that costs a few thousand small ops for a model, so the result is cached per adapter and
rebuilt only when one of its parameters changed (an optimizer step bumps the tensor's version) or
was replaced (a checkpoint load). This module does not decide which rows use which run: the
caller passes the batch's segments.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from frontier_signal.backend.lora import LoraLinear, LoraPair, Segment

if TYPE_CHECKING:
    from frontier_signal.backend.llama_decode import LlamaWeights

# Fused groups of a Llama decoder layer, by module path under `model.layers.<i>.`.
GROUPS: dict[str, tuple[str, ...]] = {
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o": ("self_attn.o_proj",),
    "gate_up": ("mlp.gate_proj", "mlp.up_proj"),
    "down": ("mlp.down_proj",),
}
PLAN_CACHE_SIZE = 16
JOINT_MAX_RUNS = 16  # the masked cross terms grow as rows x runs


class BlockedB:
    """A group's B.T without the zero blocks of its block-diagonal form, for one run's rows.

    q|k|v's B.T at rank r is [3r, 576 + 192 + 192] with two thirds zeros, gate|up's half zeros;
    at batch 1 decode is bound by the bytes it reads, and those zeros were a third of an r=32
    adapter's. Where every projection of the group has the adapter at the same rank, B.T is
    kept as [blocks, r, width] (width: the gcd of the projections' output sizes, each block one
    projection's columns) and applied by one `bmm` on the hidden activations of the block's
    projection; the output comes out in the fused layout. `dense()` gives the block-diagonal
    form back (built on first use) for `JointTerm`.
    """

    def __init__(self, B_t: torch.Tensor, outs: list[int], rank: int):
        width = math.gcd(*outs)
        blocks, index, start = [], [], 0
        for projection, out in enumerate(outs):
            rows = slice(projection * rank, (projection + 1) * rank)
            for offset in range(start, start + out, width):
                blocks.append(B_t[rows, offset : offset + width])
                index.append(projection)
            start += out
        self.outs, self.rank = outs, rank
        self.blocks = torch.stack(blocks)  # [blocks, rank, width]
        identity = index == list(range(len(outs)))
        self.index = None if identity else torch.tensor(index, device=B_t.device)
        self._dense: torch.Tensor | None = None

    def add(self, y: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        rows = hidden.shape[0]
        h = hidden.view(rows, len(self.outs), self.rank)
        if self.index is not None:
            h = h.index_select(1, self.index)
        out = torch.bmm(h.transpose(0, 1), self.blocks)  # [blocks, rows, width]
        return y.add_(out.transpose(0, 1).reshape(rows, -1))

    def dense(self) -> torch.Tensor:
        if self._dense is None:
            blocks = self.blocks
            dense = blocks.new_zeros(len(self.outs) * self.rank, sum(self.outs))
            width, start = blocks.shape[-1], 0
            for block, projection in zip(blocks, self._projections(), strict=True):
                dense[projection * self.rank : (projection + 1) * self.rank,
                      start : start + width] = block  # fmt: skip
                start += width
            self._dense = dense
        return self._dense

    def _projections(self) -> list[int]:
        if self.index is None:
            return list(range(len(self.outs)))
        return [int(i) for i in self.index]


# (A stacked [R, in], B.T block-diagonal [R, out] or without its zero blocks)
GroupTerm = tuple[torch.Tensor, torch.Tensor | BlockedB]
RowTerm = tuple[torch.Tensor, torch.Tensor | BlockedB, int, int]  # a GroupTerm on rows [start, end)


def _dense(B_t: torch.Tensor | BlockedB) -> torch.Tensor:
    return B_t.dense() if isinstance(B_t, BlockedB) else B_t


class JointTerm:
    """The terms of several runs in one group, applied to the whole batch in three ops.

    A loop over runs costs two small matmuls per run per group (and batched `bmm` on bf16 is
    far from bandwidth on CPU here). Instead every run's A is stacked, each row's hidden LoRA
    activations outside its own run's columns are zeroed by a mask, and the stacked B adds the
    rest: each adapter's weights are still read once per step, the cross terms cost a few
    MFLOP. Rows without an adapter have an all-zero mask row.
    """

    def __init__(self, terms: list[RowTerm], rows: int):
        self.A = torch.cat([A for A, _, _, _ in terms])  # [sum of ranks, in]
        self.B_t = torch.cat([_dense(B_t) for _, B_t, _, _ in terms])  # [sum of ranks, out]
        self.mask = self.A.new_zeros(rows, self.A.shape[0])
        column = 0
        for A, _, start, end in terms:
            self.mask[start:end, column : column + A.shape[0]] = 1
            column += A.shape[0]

    def add_to(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hidden = _rounded_like(F.linear(x, self.A), y).mul_(self.mask)
        return _add_product(y, hidden, self.B_t)


class StackedTerm:
    """The terms of several runs of one rank in one group, as batched matmuls over the runs.

    Each run's rows are gathered into a [runs, rows, in] batch (a view when every run has as
    many rows, in order); A and each projection's B are stacked per run, so every adapter's
    weights are read once, without the zero blocks `JointTerm`'s dense B carries (2/3 of q|k|v's,
    1/2 of gate|up's) and without its [rows, runs·rank] @ [runs·rank, out] matmul, which MKL
    runs far from bandwidth at decode's few rows: 8 runs × r=32, one row each, fp32, per
    layer 1.1 ms for the joint terms vs 0.17 ms batched (this 2-core CPU).
    """

    def __init__(self, terms: list[RowTerm], rows: int):
        first = terms[0][1]
        self.A_GIR = torch.stack([A.t() for A, _, _, _ in terms])  # [runs, in, rank]
        if isinstance(first, BlockedB):
            rank, outs = first.rank, first.outs
            dense = [_dense(B_t) for _, B_t, _, _ in terms]
            self.B = []
            start = 0
            for projection, out in enumerate(outs):
                block = [
                    d[projection * rank : (projection + 1) * rank, start : start + out]
                    for d in dense
                ]
                self.B.append(torch.stack(block))  # [runs, rank, out]
                start += out
            self.rank = rank
        else:
            self.B = [torch.stack([_dense(B_t) for _, B_t, _, _ in terms])]  # [runs, rank, out]
            self.rank = first.shape[0]
        counts = [end - start for _, _, start, end in terms]
        self.width = max(counts)
        self.view = (
            all(c == self.width for c in counts)
            and all(start == i * self.width for i, (_, _, start, _) in enumerate(terms))
            and terms[-1][3] == rows
        )
        index = [
            list(range(start, end)) + [start] * (self.width - (end - start))
            for _, _, start, end in terms
        ]
        self.index = torch.tensor(index, device=self.A_GIR.device)  # [runs, width] rows of x
        keep = [i * self.width + j for i, c in enumerate(counts) for j in range(c)]
        self.keep = torch.tensor(keep, device=self.A_GIR.device)
        self.rows = torch.tensor(
            [r for _, _, start, end in terms for r in range(start, end)], device=self.A_GIR.device
        )

    @staticmethod
    def fits(terms: list[RowTerm]) -> bool:
        A, B_t = terms[0][0], terms[0][1]
        if isinstance(B_t, BlockedB):
            return all(
                isinstance(b, BlockedB) and b.rank == B_t.rank and b.outs == B_t.outs
                and a.shape == A.shape for a, b, _, _ in terms
            )  # fmt: skip
        return all(
            not isinstance(b, BlockedB) and b.shape == B_t.shape and a.shape == A.shape
            for a, b, _, _ in terms
        )

    def add_to(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        runs = self.A_GIR.shape[0]
        x_GNI = x.view(runs, self.width, -1) if self.view else x[self.index]
        hidden = _rounded_like(torch.bmm(x_GNI, self.A_GIR), y)  # [runs, width, ranks]
        if len(self.B) == 1:
            delta = torch.bmm(hidden, self.B[0])
        else:
            r = self.rank
            delta = torch.cat(
                [torch.bmm(hidden[:, :, p * r : (p + 1) * r], B) for p, B in enumerate(self.B)], -1
            )
        delta = delta.to(y.dtype)
        if self.view:
            return y.add_(delta.view(y.shape))
        return y.index_add_(0, self.rows, delta.reshape(-1, delta.shape[-1])[self.keep])


def _add_product(y: torch.Tensor, hidden: torch.Tensor, B_t) -> torch.Tensor:
    """y += hidden @ B_t (a Tensor or `BlockedB`), in place; in the terms' dtype (then rounded
    once) where y's differs."""
    if isinstance(B_t, BlockedB):
        return B_t.add(y, hidden)
    if y.dtype == hidden.dtype:
        return y.addmm_(hidden, B_t)
    return y.add_(torch.mm(hidden, B_t))


def add_lora(
    y: torch.Tensor, x: torch.Tensor, plan: list[RowTerm] | JointTerm | StackedTerm
) -> torch.Tensor:
    """Add a group's LoRA terms (`LoraPlan.for_segments`) for input x to its base output y.

    The terms may be kept in fp32 while y is bf16 (`lora_dtype`): x is cast once per group.
    """
    if isinstance(plan, list) and not plan:
        return y
    if isinstance(plan, JointTerm):
        terms_dtype = plan.A.dtype
    elif isinstance(plan, StackedTerm):
        terms_dtype = plan.A_GIR.dtype
    else:
        terms_dtype = plan[0][0].dtype
    if x.dtype != terms_dtype:
        x = x.to(terms_dtype)
    if isinstance(plan, JointTerm | StackedTerm):
        return plan.add_to(y, x)
    for A, B_t, start, end in plan:
        if start == 0 and end == x.shape[0]:
            _add_product(y, _rounded_like(F.linear(x, A), y), B_t)
        else:
            _add_product(y[start:end], _rounded_like(F.linear(x[start:end], A), y), B_t)
    return y


def _rounded_like(hidden: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The hidden LoRA activations x @ A.T rounded to the activations' dtype where the terms
    are kept wider (`lora_dtype`), as the training forward and the native decode round them."""
    if hidden.dtype == y.dtype:
        return hidden
    return hidden.to(y.dtype).to(hidden.dtype)


def lora_dtype(activations: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype decode keeps LoRA terms in: fp32 on CPU for half-precision activations.

    A LoRA term is a few small matmuls (rank 8-64); on CPU oneDNN's bf16 kernels cost 20-80 us
    each at that size where MKL's fp32 ones take ~5 us (measured on this 2-core machine), and
    the adapter's bytes are a small part of a step, so fp32 is both faster and exact-er (the
    sum is rounded once, into the bf16 output; the hidden activations are rounded to the
    activations' dtype, `_rounded_like`, as training rounds them). On accelerators the
    activation dtype.
    """
    if device.type == "cpu" and activations in (torch.bfloat16, torch.float16):
        return torch.float32
    return activations


def _group_term(linears: list[LoraLinear], key: str, dtype) -> GroupTerm | None:
    pairs = [layer.adapters.get(key) for layer in linears]
    present = [pair for pair in pairs if pair is not None]
    if not present:
        return None
    A = torch.cat([pair.lora_A.detach() for pair in present]).to(dtype)
    out_total = sum(layer.out_features for layer in linears)
    B = A.new_zeros(out_total, A.shape[0])
    row = col = 0
    for layer, pair in zip(linears, pairs, strict=True):
        if pair is not None:
            rank = pair.lora_A.shape[0]
            B[row : row + layer.out_features, col : col + rank] = (
                pair.lora_B.detach() * pair.scale
            ).to(dtype)
            col += rank
        row += layer.out_features
    ranks = {pair.lora_A.shape[0] for pair in present}
    if len(linears) > 1 and len(present) == len(linears) and len(ranks) == 1:
        return A, BlockedB(B.t(), [layer.out_features for layer in linears], ranks.pop())
    return A, B.t()


def _signature(pairs: list[LoraPair]) -> list[tuple[weakref.ref, int]]:
    return [(weakref.ref(p), p._version) for pair in pairs for p in (pair.lora_A, pair.lora_B)]


def _still_valid(signature, pairs: list[LoraPair]) -> bool:
    params = [p for pair in pairs for p in (pair.lora_A, pair.lora_B)]
    return len(signature) == len(params) and all(
        ref() is p and version == p._version
        for (ref, version), p in zip(signature, params, strict=True)
    )


class LoraPlan:
    """Per-adapter fused LoRA terms for one `LlamaWeights`, with an LRU cache."""

    def __init__(self, weights: LlamaWeights):
        self.weights = weights
        self._cache: OrderedDict[tuple[str, torch.dtype, bool], tuple[list, list]] = OrderedDict()

    def _pairs(self, key: str) -> list[LoraPair]:
        linears = [
            lin for groups in self.weights.group_linears for g in groups.values() for lin in g
        ]
        linears.append(self.weights.lm_head)
        return [lin.adapters[key] for lin in linears if key in lin.adapters]

    def adapter_terms(self, key: str, dtype, native: bool = False) -> list[dict[str, Any]]:
        """Per layer (plus a last entry for `lm_head`) the adapter's term of each group: a
        `GroupTerm`, or with `native` a `NativeTerm`; None where it has none."""
        pairs = self._pairs(key)
        cached = self._cache.get((key, dtype, native))
        if cached is not None and _still_valid(cached[0], pairs):
            self._cache.move_to_end((key, dtype, native))
            return cached[1]
        from frontier_signal.backend.native import native_term  # native imports this module

        build = native_term if native else _group_term
        with torch.no_grad():
            terms: list[dict[str, Any]] = [
                {group: build(linears, key, dtype) for group, linears in groups.items()}
                for groups in self.weights.group_linears
            ]
            head = [self.weights.lm_head]  # applied by `add_lora`, which takes B untiled
            head_term = (
                native_term(head, key, dtype, tiled=False) if native else build(head, key, dtype)
            )
            terms.append({"lm_head": head_term})
        self._cache[(key, dtype, native)] = (_signature(pairs), terms)
        while len(self._cache) > PLAN_CACHE_SIZE:
            self._cache.popitem(last=False)
        return terms

    def native_terms(self, segments: list[Segment], dtype, head_dtype) -> list[dict[str, list]]:
        """Per layer and group the runs' `NativeTerm`s in `dtype` as (A, pieces, start, end);
        the last entry `lm_head` as `RowTerm`s in `head_dtype` for `add_lora`."""
        plan = self._row_terms(segments, dtype, native=True)
        plan[-1]["lm_head"] = [
            (A.to(head_dtype), pieces[0][-1].to(head_dtype), start, end)
            for A, pieces, start, end in plan[-1]["lm_head"]
        ]
        return plan

    def for_segments(self, segments: list[Segment], dtype) -> list[dict[str, Any]]:
        """Per layer and group, the LoRA terms to add and the rows each applies to: a list of
        `RowTerm`s, or where several runs share the batch one `StackedTerm` (all of one rank) or
        `JointTerm` (2 to `JOINT_MAX_RUNS` runs otherwise)."""
        plan: list[dict[str, Any]] = list(self._row_terms(segments, dtype))
        rows = segments[-1][2] if segments else 0
        for groups in plan:
            for group, terms in groups.items():
                if len(terms) >= 2 and StackedTerm.fits(terms):
                    groups[group] = StackedTerm(terms, rows)
                elif 2 <= len(terms) <= JOINT_MAX_RUNS:
                    groups[group] = JointTerm(terms, rows)
        return plan

    def _row_terms(
        self, segments: list[Segment], dtype, native: bool = False
    ) -> list[dict[str, list]]:
        """Per layer and group, each run's term (`GroupTerm`, or `NativeTerm` with `native`)
        with the rows it applies to, (term..., start, end)."""
        layers = len(self.weights.layers)
        plan: list[dict[str, list]] = [{group: [] for group in GROUPS} for _ in range(layers)]
        plan.append({"lm_head": []})
        for key, start, end in segments:
            if not self._pairs(key):
                continue  # the bare base model, or a run with no adapter here
            for index, groups in enumerate(self.adapter_terms(key, dtype, native)):
                for group, term in groups.items():
                    if term is not None:
                        plan[index][group].append((term[0], term[1], start, end))
        return plan
