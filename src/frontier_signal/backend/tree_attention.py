"""Attention over shared-prefix rows, piece by piece (backend/prefix_sharing.py's layout).

A row [prefix | suffix 1 | suffix 2 | ...] under a tree mask would cost a full row × row
attention, most of it masked away (every suffix × every other suffix), and the mask itself is
row² booleans. Here each piece attends only where it may: a prefix causally to itself, a suffix
to its row's prefix and causally to itself. Pieces of one kind are gathered into a padded batch
([pieces, heads, length, head dim]) and go through one `scaled_dot_product_attention` with a
small mask; outputs are scattered back to their positions (pads get zeros). On the demo's 8
chats (one 23-token prefix, 8 suffixes of ~34) that is ~20k query-key pairs where the row
needed ~86k; an RL group of 8 completions of a 256-token prompt needs 335k where its row
needed 537k, and the gap grows with the group.

`use(pieces, config)` makes a model run this for the forwards (and the backward, which may
recompute them) inside it: transformers looks the attention function up by
`config._attn_implementation` on every call, so the name is switched for the block and back; the
mask function registered with it builds no mask. Other threads must not run the model
meanwhile (the engine runs every forward on its scheduler thread).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from frontier_signal.backend import cpu_attention

NAME = "frontier_tree"
# On CPU, pieces with at most this many keys attend through the matmul kernel: for small pieces
# torch's flash kernel is 1.5-2.5x slower forward and backward (8 x 38 queries x 61 keys:
# 10.3 vs 4.3 ms, bf16, 2 threads); at 351 keys flash is ahead.
MATH_MAX_KEYS = 256
_state = threading.local()


@dataclass
class _Group:
    """Pieces of one kind: flat query and key positions per padded piece, the mask (True: may
    attend), and which of the padded queries are real."""

    q_idx: torch.Tensor  # [P, Lq]
    k_idx: torch.Tensor  # [P, Lk]
    mask: torch.Tensor  # [P, 1, Lq, Lk]
    keep: torch.Tensor  # [real queries] into P·Lq


@dataclass
class Pieces:
    groups: list[_Group]
    q_pos: torch.Tensor  # flat position of each kept query, in the groups' order

    def to(self, device: torch.device) -> Pieces:
        groups = [
            _Group(*(t.to(device) for t in (g.q_idx, g.k_idx, g.mask, g.keep))) for g in self.groups
        ]
        return Pieces(groups, self.q_pos.to(device))


def _group(items: list[tuple[list[int], list[int]]]) -> tuple[_Group, list[int]]:
    """items: (query positions, prefix key positions) per piece; a piece's own queries are also
    its causal keys."""
    lq = max(len(q) for q, _ in items)
    lp = max(len(p) for _, p in items)
    q_idx = torch.zeros(len(items), lq, dtype=torch.long)
    k_idx = torch.zeros(len(items), lp + lq, dtype=torch.long)
    mask = torch.zeros(len(items), lq, lp + lq, dtype=torch.bool)
    causal = torch.ones(lq, lq, dtype=torch.bool).tril()
    keep: list[int] = []
    positions: list[int] = []
    for p, (queries, prefix) in enumerate(items):
        n = len(queries)
        q_idx[p, :n] = torch.tensor(queries)
        q_idx[p, n:] = queries[0]
        k_idx[p, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        k_idx[p, lp : lp + n] = torch.tensor(queries)
        k_idx[p, lp + n :] = queries[0]
        mask[p, :, : len(prefix)] = True
        mask[p, :, lp : lp + n] = causal[:, :n]  # pad queries see the real keys: no empty row
        keep += range(p * lq, p * lq + n)
        positions += queries
    return _Group(q_idx, k_idx, mask[:, None], torch.tensor(keep)), positions


def build_pieces(rows: list[tuple[int, list[tuple[int, int]]]], width: int) -> Pieces:
    """rows: per row its shared prefix length and its suffixes' [start, end) → the pieces."""
    prefixes: list[tuple[list[int], list[int]]] = []
    suffixes: list[tuple[list[int], list[int]]] = []
    for row, (shared, spans) in enumerate(rows):
        base = row * width
        prefix = list(range(base, base + shared))
        if shared:
            prefixes.append((prefix, []))
        suffixes += [(list(range(base + s, base + e)), prefix) for s, e in spans]
    groups: list[_Group] = []
    positions: list[int] = []
    for items in (prefixes, suffixes):
        if items:
            group, where = _group(items)
            groups.append(group)
            positions += where
    return Pieces(groups, torch.tensor(positions, dtype=torch.long))


def tree_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query [B, H, T, D], key/value [B, KV, T, D]
    → ([B, T, H, D], no weights)."""
    pieces: Pieces = _state.pieces
    batch, heads, width, dim = query.shape
    kv_heads = key.shape[1]
    q = query.transpose(0, 1).reshape(heads, batch * width, dim)
    k = key.transpose(0, 1).reshape(kv_heads, batch * width, dim)
    v = value.transpose(0, 1).reshape(kv_heads, batch * width, dim)
    outputs = []
    for group in pieces.groups:
        n, lq = group.q_idx.shape
        lk = group.k_idx.shape[1]
        # index_select, not q[:, idx]: its backward is index_add_, 2-3x faster on CPU than
        # advanced indexing's accumulating index_put_ (measured at the demo's shapes).
        q_g = q.index_select(1, group.q_idx.reshape(-1)).reshape(heads, n, lq, dim).transpose(0, 1)
        k_g = k.index_select(1, group.k_idx.reshape(-1)).reshape(kv_heads, n, lk, dim)
        v_g = v.index_select(1, group.k_idx.reshape(-1)).reshape(kv_heads, n, lk, dim)
        k_g, v_g = k_g.transpose(0, 1), v_g.transpose(0, 1)
        dropout_p = dropout if module.training else 0.0
        out = _attend(q_g, k_g, v_g, group.mask, dropout_p, scaling)
        outputs.append(out.transpose(0, 1).reshape(heads, n * lq, dim).index_select(1, group.keep))
    flat = q.new_zeros(heads, batch * width, dim).index_copy(1, pieces.q_pos, torch.cat(outputs, 1))
    return flat.reshape(heads, batch, width, dim).permute(1, 2, 0, 3).contiguous(), None


def _attend(q, k, v, mask, dropout: float, scale: float | None) -> torch.Tensor:
    """One padded group of pieces: q [P, H, Lq, D], k and v [P, KV, Lk, D], mask [P, 1, Lq, Lk]."""
    keys = k.shape[2]
    if (
        not dropout
        and keys <= cpu_attention.MAX_KEYS
        and cpu_attention.available(q.device, q.dtype)
    ):
        return cpu_attention.attention(q, k, v, mask[:, 0], causal=False, scale=scale)
    small = q.device.type == "cpu" and keys <= MATH_MAX_KEYS
    with sdpa_kernel([SDPBackend.MATH]) if small else contextlib.nullcontext():
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=dropout,
            scale=scale,
            enable_gqa=q.shape[1] != k.shape[1],
        )


def _no_mask(*args, **kwargs) -> None:
    return None  # the pieces carry the structure


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, tree_attention)
    AttentionMaskInterface.register(NAME, _no_mask)


_register()


@contextlib.contextmanager
def use(pieces: Pieces | None, config) -> Iterator[None]:
    """Inside: the model whose `config` this is attends piece by piece (no-op for None)."""
    if pieces is None:
        yield
        return
    _state.pieces = pieces
    try:
        with cpu_attention.attention_implementation(config, NAME):
            yield
    finally:
        _state.pieces = None
