"""Content-hashed, block-level KV cache of prompt prefixes, one per base model, LRU-bounded.

A prompt is cut into blocks of `BLOCK` tokens. Block j's hash chains the hash of block j-1 with
its token ids, and the chain starts from the identity of the weights that computed it: the base
model (name, dtype, device) and the adapter (`Adapter.identity()`: a frozen checkpoint's folder
and file stamp, or a live run's adapter object and its parameters' version counters, which every
training step bumps). Two rows share a block only when every token before and in it, the base
model and the adapter weights all match, so a hit gives the same keys and values a fresh prefill
computes (up to floating-point summation order), another adapter never reuses them, and a run
that trains gets new hashes, leaving its old blocks to age out of the LRU.

A block holds the keys and values of every layer for its tokens ([layers, kv heads, BLOCK, head
dim] each, RoPE already applied: a block only ever sits at the same positions) and, once a
prefill that wanted prompt log-probs went through it, each of its tokens' log-probs. The budget
is in bytes of those tensors. This module stores and finds blocks; `prefill` decides what to
reuse and builds the batch.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

import torch

BLOCK = 16
MIB = 1 << 20


@dataclass
class Block:
    keys: torch.Tensor  # [layers, kv_heads, BLOCK, head_dim]
    values: torch.Tensor
    logprobs: list[float | None] | None = None  # each token's log-prob given the ones before

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2


@dataclass
class PrefixStats:
    lookups: int = 0  # rows looked up
    hit_tokens: int = 0  # prompt tokens whose KV came from the cache
    miss_tokens: int = 0  # prompt tokens computed (looked-up rows only)
    stored_blocks: int = 0
    evicted_blocks: int = 0


def chain_hashes(base_identity: str, adapter_identity: str, tokens: list[int]) -> list[bytes]:
    """The hash of every full block of `tokens`, each covering all tokens up to its end."""
    digest = hashlib.blake2b(f"{base_identity}\0{adapter_identity}".encode(), digest_size=16)
    previous = digest.digest()
    hashes = []
    for start in range(0, len(tokens) - BLOCK + 1, BLOCK):
        block = array("q", tokens[start : start + BLOCK]).tobytes()
        previous = hashlib.blake2b(previous + block, digest_size=16).digest()
        hashes.append(previous)
    return hashes


class PrefixCache:
    """Blocks by chain hash, least recently used first out once over `max_bytes`."""

    def __init__(self, max_bytes: int = 256 * MIB):
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()
        self._bytes = 0
        self.stats = PrefixStats()

    def configure(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._trim()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def match(self, hashes: list[bytes], need_logprobs: bool = False) -> list[Block]:
        """The longest run of leading blocks present (with log-probs, if asked); marks them
        recently used."""
        found = []
        for digest in hashes:
            block = self._blocks.get(digest)
            if block is None or (need_logprobs and block.logprobs is None):
                break
            self._blocks.move_to_end(digest)
            found.append(block)
        return found

    def get(self, digest: bytes) -> Block | None:
        return self._blocks.get(digest)

    def put(self, digest: bytes, block: Block) -> None:
        if not self.enabled or block.nbytes > self.max_bytes:
            return
        old = self._blocks.pop(digest, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._blocks[digest] = block
        self._bytes += block.nbytes
        self.stats.stored_blocks += 1
        self._trim()

    def clear(self) -> None:
        self._blocks.clear()
        self._bytes = 0

    def _trim(self) -> None:
        while self._bytes > self.max_bytes and self._blocks:
            _, block = self._blocks.popitem(last=False)
            self._bytes -= block.nbytes
            self.stats.evicted_blocks += 1

    def __len__(self) -> int:
        return len(self._blocks)

    def describe(self) -> dict:
        stats = self.stats
        return {
            "blocks": len(self._blocks),
            "block_tokens": BLOCK,
            "mib": round(self._bytes / MIB, 2),
            "max_mib": round(self.max_bytes / MIB, 2),
            "lookups": stats.lookups,
            "hit_tokens": stats.hit_tokens,
            "miss_tokens": stats.miss_tokens,
            "stored_blocks": stats.stored_blocks,
            "evicted_blocks": stats.evicted_blocks,
        }
