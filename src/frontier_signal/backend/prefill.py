"""The prompt pass of sampling: one batched forward that fills the KV cache, reusing what it can.

Two kinds of reuse, both exact up to floating-point summation order, both on while the base
model's prefix cache has a budget:
- rows with the same adapter and the same prompt (`num_samples=n`, or equal concurrent requests)
  are computed once and their KV cache, last logits and prompt log-probs copied to each row;
- with a `PrefixCache`, each distinct prompt's longest cached prefix (whole blocks, never the
  last prompt token, whose logits are needed) is loaded instead of computed, and the full
  blocks this pass computes are stored for later requests.

Layout (what `sampling` and `llama_decode` expect): rows left-padded to the longest prompt P,
row i's tokens in the last L_i slots. Only the last W slots go through the model, W being the
most tokens any row has to compute; the first P - W slots are the "past", filled from cached
blocks (left padding where a row has fewer cached tokens; a row with a short uncached tail
recomputes some cached tokens instead, which is correct, just less saving). A row that wants
prompt log-probs reuses one token fewer than its blocks hold (the logits of the first new token
come from the hidden state of the last reused one) and takes the earlier log-probs from the
blocks, which store them once a pass computed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from frontier_signal.backend.base_model import BaseModel, target_logprobs
from frontier_signal.backend.lora import Segment
from frontier_signal.backend.prefix_cache import BLOCK, Block, PrefixCache, chain_hashes


@dataclass
class Prefilled:
    cache: DynamicCache  # [rows, kv_heads, P, head_dim] per layer
    mask: torch.Tensor  # [rows, P]: 1 on real tokens
    positions: torch.Tensor  # [rows, P]
    logits: torch.Tensor  # [rows, vocab] fp32, after the last prompt token
    prompt_logprobs: list[list[float | None] | None]


@dataclass
class _Prompt:
    """One distinct (adapter, prompt) of the batch."""

    key: str
    tokens: list[int]
    identity: str = ""
    want_logprobs: bool = False
    hashes: list[bytes] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    reuse: int = 0  # cached tokens it may take
    past: int = 0  # cached tokens it does take (those in the past slots)
    logprobs: list[float | None] | None = None


def segments_of(keys: list[str]) -> list[Segment]:
    segments: list[Segment] = []
    for index, key in enumerate(keys):
        if segments and segments[-1][0] == key:
            segments[-1] = (key, segments[-1][1], index + 1)
        else:
            segments.append((key, index, index + 1))
    return segments


def base_identity(base: BaseModel) -> str:
    return f"{base.name}|{base.dtype}|{base.device}"


def _distinct(rows, identities: dict[str, str]) -> tuple[list[_Prompt], list[int]]:
    """The distinct prompts (in row order, so adapter segments stay contiguous) and, per row,
    the index of its prompt."""
    index_of: dict[tuple, int] = {}
    prompts: list[_Prompt] = []
    owners = []
    for row in rows:
        key = (row.adapter_key, tuple(row.prompt_tokens))
        if key not in index_of:
            index_of[key] = len(prompts)
            identity = identities.get(row.adapter_key, row.adapter_key)
            prompts.append(_Prompt(row.adapter_key, list(row.prompt_tokens), identity))
        prompts[index_of[key]].want_logprobs |= row.want_prompt_logprobs
        owners.append(index_of[key])
    return prompts, owners


def _plan_reuse(base: BaseModel, prompts: list[_Prompt], prefix: PrefixCache | None) -> None:
    if prefix is None or not prefix.enabled:
        return
    identity = base_identity(base)
    for p in prompts:
        p.hashes = chain_hashes(identity, p.identity, p.tokens)
        usable = p.hashes[: (len(p.tokens) - 1) // BLOCK]
        p.blocks = prefix.match(usable, need_logprobs=p.want_logprobs)
        p.reuse = len(p.blocks) * BLOCK
        if p.want_logprobs and p.reuse:
            p.reuse -= 1


def _past_cache(base: BaseModel, prompts: list[_Prompt], past: int) -> DynamicCache:
    """A DynamicCache holding `past` slots per row: each row's reused tokens, right-aligned."""
    cache = DynamicCache(config=base.model.config)
    if past == 0:
        return cache
    sample = next(p.blocks[0] for p in prompts if p.past)
    layers, kv_heads, _, head_dim = sample.keys.shape
    shape = (layers, len(prompts), kv_heads, past, head_dim)
    keys, values = sample.keys.new_zeros(shape), sample.values.new_zeros(shape)
    for i, p in enumerate(prompts):
        if p.past:
            keys[:, i, :, past - p.past :] = torch.cat([b.keys for b in p.blocks], 2)[
                :, :, : p.past
            ]
            values[:, i, :, past - p.past :] = torch.cat([b.values for b in p.blocks], 2)[
                :, :, : p.past
            ]
    for layer in range(layers):
        cache.update(keys[layer], values[layer], layer)
    return cache


def _prompt_logprobs(base: BaseModel, p: _Prompt, hidden_TD: torch.Tensor) -> None:
    """[None] + log p(token t | tokens before) for t >= 1: cached ones, then from `hidden_TD`
    (the hidden states of the tokens this pass computed)."""
    computed = len(p.tokens) - p.past
    cached = [lp for block in p.blocks for lp in block.logprobs or []][1 : p.past + 1]
    fresh: list[float] = []
    if computed > 1:
        targets = torch.tensor(p.tokens[p.past + 1 :], device=hidden_TD.device)
        lp = target_logprobs(base, hidden_TD[:-1], targets, [(p.key, 0, computed - 1)])
        fresh = lp.tolist()
    p.logprobs = [None, *cached, *fresh] if len(p.tokens) > 0 else [None]


def _store(prefix: PrefixCache, cache: DynamicCache, prompts: list[_Prompt], width: int) -> None:
    """Put every full block of every prompt that the cache does not hold yet."""
    for i, p in enumerate(prompts):
        full = len(p.tokens) // BLOCK
        new = []
        for j in range(full):
            block = prefix.get(p.hashes[j])
            lps = p.logprobs[j * BLOCK : (j + 1) * BLOCK] if p.logprobs is not None else None
            if block is None:
                new.append(j)
            elif block.logprobs is None and lps is not None:
                block.logprobs = lps
        if not new:
            continue
        first = width - len(p.tokens) + new[0] * BLOCK
        last = width - len(p.tokens) + full * BLOCK
        keys = torch.stack([layer.keys[i, :, first:last] for layer in _layers(cache)])
        values = torch.stack([layer.values[i, :, first:last] for layer in _layers(cache)])
        for j in new:
            offset = (j - new[0]) * BLOCK
            lps = p.logprobs[j * BLOCK : (j + 1) * BLOCK] if p.logprobs is not None else None
            prefix.put(
                p.hashes[j],
                Block(
                    keys[:, :, offset : offset + BLOCK].clone(),
                    values[:, :, offset : offset + BLOCK].clone(),
                    lps,
                ),
            )


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's per-layer holders of `.keys` and `.values` [B, kv_heads, T, head_dim]. Any:
    transformers types them as a union that includes layer kinds without keys (linear
    attention), which the models served here do not have."""
    return list(cache.layers)


def _inputs(
    base: BaseModel, prompts: list[_Prompt], width: int, longest: int, prefix: PrefixCache | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens computed this pass (left-padded to `width`) and the attention mask over every
    prompt's whole length (left-padded to `longest`); counts the prefix cache's hits."""
    input_ids = torch.full((len(prompts), width), base.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for i, p in enumerate(prompts):
        p.past = max(0, len(p.tokens) - width)
        computed = p.tokens[p.past :]
        input_ids[i, width - len(computed) :] = torch.tensor(computed)
        mask[i, longest - len(p.tokens) :] = 1
        if prefix is not None and prefix.enabled:
            prefix.stats.lookups += 1
            prefix.stats.hit_tokens += p.past
            prefix.stats.miss_tokens += len(p.tokens) - p.past
    return input_ids.to(base.device), mask.to(base.device)


@torch.no_grad()
def prefill(
    base: BaseModel,
    rows: list,
    prefix: PrefixCache | None = None,
    identities: dict[str, str] | None = None,
) -> Prefilled:
    """The prompt pass for `rows` (`sampling.SampleRow`s, sorted by adapter key).

    `identities` maps adapter keys to `Adapter.identity()`. Without a prefix cache (or with a
    zero budget) nothing is reused, equal prompts included: every row computes its own prompt,
    as before the cache existed (the baseline of bench/prefix_cache.py).
    """
    device = base.device
    if prefix is None or not prefix.enabled:  # no reuse at all: every row computes its prompt
        prompts = [
            _Prompt(r.adapter_key, list(r.prompt_tokens), want_logprobs=r.want_prompt_logprobs)
            for r in rows
        ]
        owners = list(range(len(rows)))
    else:
        prompts, owners = _distinct(rows, identities or {})
    _plan_reuse(base, prompts, prefix)
    longest = max(len(p.tokens) for p in prompts)
    width = max(len(p.tokens) - p.reuse for p in prompts)  # slots computed this pass
    past = longest - width
    input_ids, mask = _inputs(base, prompts, width, longest, prefix)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    cache = _past_cache(base, prompts, past)
    with base.routing.use(segments_of([p.key for p in prompts])), base.prompt_attention():
        hidden = base.hidden_states(
            input_ids,
            attention_mask=mask,
            position_ids=positions[:, past:],
            cache=cache,
            use_cache=True,
        )
        for i, p in enumerate(prompts):
            if p.want_logprobs:
                _prompt_logprobs(base, p, hidden[i, width - (len(p.tokens) - p.past) :])
        logits = base.lm_head(hidden[:, -1]).float()
    if prefix is not None and prefix.enabled:
        _store(prefix, cache, prompts, longest)
    if owners != list(range(len(prompts))):
        index = torch.tensor(owners, device=device)
        for layer in _layers(cache):
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        mask, positions, logits = mask[index], positions[index], logits[index]
    prompt_logprobs = [
        prompts[owner].logprobs if row.want_prompt_logprobs else None
        for row, owner in zip(rows, owners, strict=True)
    ]
    return Prefilled(cache, mask, positions, logits, prompt_logprobs)
