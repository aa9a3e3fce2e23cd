"""The rows of one training forward: which datum token sits where, and what each row may attend.

Three layouts, cheapest first by the positions they compute (pads included):
- shared prefixes (backend/prefix_sharing.py): datums of a request that start alike hold their
  common prefix once, attended piece by piece (backend/tree_attention.py); used when it computes
  at most 90 % of the positions the next layout would;
- packed (backend/packing.py): consecutive short sequences of a request end to end in one row,
  block-diagonal, when that saves rows;
- padded: one datum per row, right-padded to the longest.
Rows are grouped per request in request order, so each run's LoRA term reads a range of rows
(`row_segments`) and of computed positions (`token_segments`).

It builds tensors only: the forward, the losses and the backward are backend/training.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frontier_signal.backend.base_model import BaseModel
from frontier_signal.backend.lora import Segment
from frontier_signal.backend.packing import pack_rows, packed_inputs
from frontier_signal.backend.prefix_sharing import (
    computed_positions,
    plan_rows,
    shared_layout,
)
from frontier_signal.backend.tree_attention import Pieces, build_pieces
from frontier_signal.engine.types import ForwardBackwardRequest

SHARE_IF_AT_MOST = 0.9  # of the positions the packed or padded layout computes


@dataclass
class TrainBatch:
    """One forward's rows. Computed positions are the real (non-pad) ones of the [R, T] grid,
    row-major (`valid_BT`); datum tokens are every datum's tokens in request order (N). They
    are the same except with shared prefixes, where `share_N` maps each datum token to its
    computed position."""

    input_ids: torch.Tensor
    valid_BT: torch.Tensor
    targets_U: torch.Tensor  # per computed position
    lengths: list[int]  # per datum
    row_segments: list[Segment]
    token_segments: list[Segment]  # over computed positions
    token_ranges: list[tuple[int, int]]  # over datum tokens
    position_ids: torch.Tensor | None = None  # packed or shared rows
    pieces: Pieces | None = None  # shared rows: what each position attends
    share_N: torch.Tensor | None = None  # shared rows

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of the base model's forward besides the input ids."""
        return {} if self.position_ids is None else {"position_ids": self.position_ids}


def build_batch(
    base: BaseModel,
    runs_keys: dict[str, str],
    requests: list[ForwardBackwardRequest],
    pack: bool = False,
) -> TrainBatch:
    """`runs_keys`: each request's run id → its adapter key. `pack`: allow the packed and shared
    layouts (where they compute fewer positions)."""
    datums = [d for r in requests for d in r.datums]
    lengths = [len(d.input_tokens) for d in datums]
    device = base.device
    targets_N = torch.tensor([t for d in datums for t in d.target_tokens], dtype=torch.long)
    per_request = [[len(d.input_tokens) for d in r.datums] for r in requests]
    layout = pack_rows(per_request, max(lengths))
    rows_per_request = [len(rows) for rows in layout]
    if pack and sum(rows_per_request) < len(datums):  # packing saves rows
        tokens = [[d.input_tokens for d in r.datums] for r in requests]
        input_ids, position_ids, valid_BT = packed_inputs(tokens, layout, base.pad_token_id)
    else:
        rows_per_request = [len(r.datums) for r in requests]
        position_ids = None
        input_ids = torch.full((len(datums), max(lengths)), base.pad_token_id, dtype=torch.long)
        for row, datum in enumerate(datums):
            input_ids[row, : lengths[row]] = torch.tensor(datum.input_tokens)
        # Right padding under a causal mask: real tokens never attend to pads, so no mask is
        # needed and SDPA keeps its fast causal path. Pads are dropped before the unembedding.
        valid_BT = torch.arange(input_ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    datum_tokens = [sum(len(d.input_tokens) for d in r.datums) for r in requests]
    positions = list(datum_tokens)  # computed positions per request
    batch = TrainBatch(input_ids, valid_BT, targets_N, lengths, [], [], [], position_ids)
    if pack:
        _share_prefixes(base, requests, batch, rows_per_request, positions, max(lengths))
    row = position = token = 0
    for request, n_rows, n_positions, n_tokens in zip(
        requests, rows_per_request, positions, datum_tokens, strict=True
    ):
        key = runs_keys[request.run_id]
        batch.row_segments.append((key, row, row + n_rows))
        batch.token_segments.append((key, position, position + n_positions))
        batch.token_ranges.append((token, token + n_tokens))
        row, position, token = row + n_rows, position + n_positions, token + n_tokens
    for name in ("input_ids", "valid_BT", "targets_U", "position_ids", "pieces", "share_N"):
        value = getattr(batch, name)
        if value is not None:
            setattr(batch, name, value.to(device))
    return batch


def _share_prefixes(
    base: BaseModel,
    requests: list[ForwardBackwardRequest],
    batch: TrainBatch,
    rows_per_request: list[int],
    positions: list[int],
    longest: int,
) -> None:
    """Switch `batch` to the shared layout where it computes few enough positions."""
    sequences = [[(d.input_tokens, d.target_tokens) for d in r.datums] for r in requests]
    rows = plan_rows(sequences, longest)
    if rows is None:
        return
    if computed_positions(sequences, rows) > SHARE_IF_AT_MOST * batch.input_ids.numel():
        return
    layout = shared_layout(sequences, rows, base.pad_token_id)
    targets_U = torch.empty(int(layout.valid_BT.sum()), dtype=torch.long)
    targets_U[layout.share_N] = batch.targets_U  # shared positions have the same target
    batch.input_ids, batch.valid_BT, batch.targets_U = layout.input_ids, layout.valid_BT, targets_U
    batch.position_ids = layout.position_ids
    batch.pieces = build_pieces(layout.spans, layout.input_ids.shape[1])
    batch.share_N = layout.share_N
    rows_per_request[:] = layout.rows_per_request
    positions[:] = layout.positions_per_request
