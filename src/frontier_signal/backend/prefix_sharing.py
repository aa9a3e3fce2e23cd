"""Prefix sharing: datums of one request that start alike are computed once up to where they part.

Chats rendered with one system prompt, or the samples of one RL group (the same prompt, several
completions), repeat the same leading tokens in every datum. Under a causal mask those positions
have the same hidden states in every datum (same tokens, same positions, same adapter), so a
packed row holds the shared prefix once and then each datum's rest ("suffix"): a suffix attends
to the prefix and causally to itself, never to another suffix (backend/tree_attention.py computes
that piece by piece), and its position ids continue from the prefix's length. Per datum token,
`share_N` says which computed position holds it; log-probs are gathered through it, so every
per-datum result is the same as unshared, and the gradient of a shared position is the sum of
what each datum's loss gives it (the gather's backward).

A position is shared only where the inputs and the targets agree (log p(target) is then the same
too). Datums are grouped in their given order: a run of consecutive datums whose common prefix
stays at least `MIN_SHARED` positions and three quarters of the group's. Requests without such a
group still pack their sequences end to end (block-diagonal, as backend/packing.py). Rows never
mix requests, so the LoRA routing by rows is unchanged.

It does not decide whether to share (backend/batching.py compares the positions each layout
computes) and knows nothing about runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_SHARED = 8  # positions: shorter common prefixes are not worth a suffix's longer row
# A shared row's width cap. Attention is per piece (no row² term), so it only bounds how long
# one row's activations live together; several rows repeat the prefix.
ROW_CAPACITY = 4096


@dataclass
class SharedLayout:
    """Rows of one forward with shared prefixes: inputs, position ids, per row its prefix
    length and suffix spans, which grid positions are computed (`valid_BT`, row-major = the
    order of the computed positions), per datum token the index of its computed position, and
    per request its number of rows and of computed positions."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    spans: list[tuple[int, list[tuple[int, int]]]]
    valid_BT: torch.Tensor
    share_N: torch.Tensor
    rows_per_request: list[int]
    positions_per_request: list[int]


def common_prefix(a: tuple[list[int], list[int]], b: tuple[list[int], list[int]]) -> int:
    """Leading positions where both the inputs and the targets of two datums agree."""
    n = 0
    for x, y, tx, ty in zip(a[0], b[0], a[1], b[1], strict=False):
        if x != y or tx != ty:
            break
        n += 1
    return n


def group_datums(sequences: list[tuple[list[int], list[int]]]) -> list[tuple[int, list[int]]]:
    """Consecutive datums that share a prefix: [(prefix length, datum indices)], in order; a
    datum that shares nothing is a group of its own with prefix 0."""
    groups: list[tuple[int, list[int]]] = []
    for index, sequence in enumerate(sequences):
        if groups:
            shared, members = groups[-1]
            first = sequences[members[0]]
            lcp = common_prefix(first, sequence)
            if len(members) > 1:
                lcp = min(lcp, shared)
            # Sharing stops at the last position of the shorter datum: a suffix is never empty.
            lcp = min(lcp, len(sequence[0]) - 1, len(first[0]) - 1)
            if lcp >= MIN_SHARED and (len(members) == 1 or lcp * 4 >= shared * 3):
                groups[-1] = (lcp, [*members, index])
                continue
        groups.append((0, [index]))
    return groups


Row = tuple[int, list[int]]  # (shared prefix length, datum indices); the first supplies the prefix
Sequences = list[tuple[list[int], list[int]]]  # one request's datums: (inputs, targets)


def plan_rows(requests: list[Sequences], longest: int) -> list[list[Row]] | None:
    """Per request its rows, or None when no request has a group that shares a prefix. Each
    request is grouped once; a row holds one group's suffixes, or datums that share nothing end
    to end, while it stays within the capacity: the widest shared group's row (at most
    `ROW_CAPACITY`), at least `longest`."""
    groups = [group_datums(sequences) for sequences in requests]
    widest = [
        _width(sequences, shared, members)
        for sequences, request_groups in zip(requests, groups, strict=True)
        for shared, members in request_groups
        if shared
    ]
    if not widest:
        return None
    capacity = max(longest, min(ROW_CAPACITY, max(widest)))
    return [_rows(seqs, grouped, capacity) for seqs, grouped in zip(requests, groups, strict=True)]


def _width(sequences: Sequences, shared: int, members: list[int]) -> int:
    return shared + sum(len(sequences[i][0]) - shared for i in members)


def _rows(sequences: Sequences, groups: list[Row], capacity: int) -> list[Row]:
    rows: list[Row] = []
    used, row_group = capacity + 1, -2
    for group, (shared, members) in enumerate(groups):
        key = group if shared else -1  # groups of one share a row with each other
        for index in members:
            suffix = len(sequences[index][0]) - shared
            if key != row_group or used + suffix > capacity:
                rows.append((shared, []))
                used, row_group = shared, key
            rows[-1][1].append(index)
            used += suffix
    return rows


def computed_positions(requests: list[Sequences], rows: list[list[Row]]) -> int:
    """Positions the shared layout computes, pads included (rows × widest row)."""
    pairs = zip(requests, rows, strict=True)
    widths = [_width(seqs, *row) for seqs, request_rows in pairs for row in request_rows]
    return len(widths) * max(widths)


def shared_layout(requests: list[Sequences], rows: list[list[Row]], pad_id: int) -> SharedLayout:
    """Per request its datums' (input tokens, target tokens) and `plan_rows`' rows → the shared
    rows' tensors."""
    all_rows = [(r, row) for r, request_rows in enumerate(rows) for row in request_rows]
    widths = [_width(requests[r], *row) for r, row in all_rows]
    width = max(widths)
    input_ids = torch.full((len(all_rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(all_rows), width), dtype=torch.long)
    spans: list[tuple[int, list[tuple[int, int]]]] = []
    valid = torch.zeros((len(all_rows), width), dtype=torch.bool)
    datum_starts: list[list[int]] = []
    total = 0  # each datum's first token in the flat datum-token order
    for seqs in requests:
        datum_starts.append([])
        for inputs, _ in seqs:
            datum_starts[-1].append(total)
            total += len(inputs)
    share_N = torch.empty(total, dtype=torch.long)
    rows_per_request = [0] * len(requests)
    positions_per_request = [0] * len(requests)
    computed = 0  # computed positions before this row (row-major)
    for row, ((r, (shared, members)), used) in enumerate(zip(all_rows, widths, strict=True)):
        first = requests[r][members[0]][0]
        input_ids[row, :shared] = torch.tensor(first[:shared], dtype=torch.long)
        position_ids[row, :shared] = torch.arange(shared)
        spans.append((shared, []))
        start = shared
        for index in members:
            tokens = requests[r][index][0]
            end = start + len(tokens) - shared
            input_ids[row, start:end] = torch.tensor(tokens[shared:], dtype=torch.long)
            position_ids[row, start:end] = torch.arange(shared, len(tokens))
            spans[-1][1].append((start, end))
            begin = datum_starts[r][index]
            share_N[begin : begin + shared] = torch.arange(computed, computed + shared)
            share_N[begin + shared : begin + len(tokens)] = torch.arange(
                computed + start, computed + end
            )
            start = end
        valid[row, :used] = True
        position_ids[row, used:] = torch.arange(used, width)
        rows_per_request[r] += 1
        positions_per_request[r] += used
        computed += used
    return SharedLayout(
        input_ids,
        position_ids,
        spans,
        valid,
        share_N,
        rows_per_request,
        positions_per_request,
    )
