"""Packing: several short sequences of one request in one row, with block-diagonal attention.

A training batch is right-padded to its longest sequence, so a batch of short sequences beside
one long one spends most of its rows on pads. Packing puts consecutive sequences of one
request into one row while they fit in the longest sequence's length (next-fit, in order, so
the flat order of the real tokens, and so every per-datum result, is the same as unpacked).
Each sequence restarts its position ids at 0; the base model (transformers' masking utils)
reads restarting position ids without an attention mask as packed sequences and attends only
within each one (causal and block-diagonal), so no token sees another sequence
(tests/test_packing.py). Sequences of different requests never share a row: each row stays one
run's, so the LoRA routing by rows is unchanged.

It does not decide when to pack (backend/training.py packs when it saves rows) and knows
nothing about runs.
"""

from __future__ import annotations

import torch


def pack_rows(lengths: list[list[int]], capacity: int) -> list[list[list[int]]]:
    """Per request, its rows, each a list of indices into that request's sequences: consecutive
    sequences share a row while their lengths add up to at most `capacity`."""
    packed = []
    for request in lengths:
        rows: list[list[int]] = []
        used = capacity + 1
        for index, length in enumerate(request):
            if used + length > capacity:
                rows.append([])
                used = 0
            rows[-1].append(index)
            used += length
        packed.append(rows)
    return packed


def packed_inputs(
    sequences: list[list[list[int]]], rows: list[list[list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per request its sequences' tokens and their `pack_rows` layout → (input ids [R, T],
    position ids [R, T] restarting at each sequence, real-token mask [R, T]); rows are
    right-padded, the pads' positions continuing the row's last sequence."""
    flat_rows = [
        [request[i] for i in row]
        for request, layout in zip(sequences, rows, strict=True)
        for row in layout
    ]
    width = max(sum(len(s) for s in row) for row in flat_rows)
    input_ids = torch.full((len(flat_rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(flat_rows), width), dtype=torch.long)
    valid = torch.zeros((len(flat_rows), width), dtype=torch.bool)
    for r, row in enumerate(flat_rows):
        start = 0
        for tokens in row:
            end = start + len(tokens)
            input_ids[r, start:end] = torch.tensor(tokens)
            position_ids[r, start:end] = torch.arange(len(tokens))
            start = end
        valid[r, :start] = True
        last = len(row[-1])
        position_ids[r, start:] = torch.arange(last, last + width - start)
    return input_ids, position_ids, valid
