"""Batched autoregressive sampling with a KV cache, for rows of many runs at once.

Prompts are left-padded into one batch (attention mask + explicit positions), each row carries
its own adapter, decoding settings and random generator, so a row's output does not depend on
what else is in the batch. The prompt goes through the HF forward (its hidden states also give
prompt log-probs); decoding then runs on `llama_decode.LlamaDecoder` (a static cache and a compact
step, several times less overhead per token) for Llama-family models, and on the HF forward with
a `DynamicCache` for anything else. How a token is chosen from logits is `token_choice`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from frontier_signal.backend.base_model import BaseModel, target_logprobs
from frontier_signal.backend.constrained import grammar_states
from frontier_signal.backend.llama_decode import MAX_4BIT_ROWS, LlamaDecoder
from frontier_signal.backend.lora import Segment
from frontier_signal.backend.token_choice import TokenCounts, TopLogprobs, choose
from frontier_signal.engine.types import SampledSequence, SamplingParams, TokenCallback


@dataclass
class SampleRow:
    """One sequence to generate (a request with n samples becomes n rows)."""

    adapter_key: str
    prompt_tokens: list[int]
    params: SamplingParams
    generator: torch.Generator
    want_prompt_logprobs: bool = False
    origin: tuple[int, int] = (0, 0)  # (request index, sample index), for the token callback
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] = field(default_factory=list)
    stop_reason: str = ""
    text_end: int = -1  # where a stop string begins in the decoded text, -1 if none


def _segments(rows: list[SampleRow]) -> list[Segment]:
    segments: list[Segment] = []
    for index, row in enumerate(rows):
        if segments and segments[-1][0] == row.adapter_key:
            segments[-1] = (row.adapter_key, segments[-1][1], index + 1)
        else:
            segments.append((row.adapter_key, index, index + 1))
    return segments


def _check_stop(row: SampleRow, tokenizer, grammar_done: bool = False) -> bool:
    params = row.params
    if row.tokens[-1] in params.stop_token_ids or grammar_done:
        row.stop_reason = "stop"
        return True
    if params.stop_strings:
        # A new match ends in the newest token and spans at most len(stop) tokens (each token
        # decodes to >= 1 character), so decode only that tail each step; the whole text only
        # once a stop string shows up there.
        window = max(len(s) for s in params.stop_strings) + 1
        tail = tokenizer.decode(row.tokens[-window:], skip_special_tokens=False)
        if any(s and s in tail for s in params.stop_strings):
            text = tokenizer.decode(row.tokens, skip_special_tokens=False)
            row.stop_reason = "stop"
            row.text_end = min(text.find(s) for s in params.stop_strings if s and s in text)
            return True
    if len(row.tokens) >= params.max_tokens:
        row.stop_reason = "length"
        return True
    return False


def _finish(row: SampleRow, tokenizer) -> SampledSequence:
    text_tokens = row.tokens
    ended_by_token = row.tokens and row.tokens[-1] in row.params.stop_token_ids
    if row.stop_reason == "stop" and row.text_end < 0 and ended_by_token:
        text_tokens = row.tokens[:-1]  # a stop token ends the text but is not part of it
    text = tokenizer.decode(text_tokens, skip_special_tokens=False)
    if row.text_end >= 0:
        text = text[: row.text_end]
    return SampledSequence(
        list(row.tokens), text, list(row.logprobs), row.stop_reason, list(row.top_logprobs)
    )


class HFStepper:
    """Decode steps through the HF forward and its `DynamicCache` (any architecture)."""

    def __init__(self, base: BaseModel, cache, mask: torch.Tensor, positions: torch.Tensor):
        self.base, self.cache, self.mask = base, cache, mask
        self.last_positions = positions[:, -1]

    def step(self, token_ids_B: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        self.last_positions = self.last_positions + 1
        hidden = self.base.hidden_states(
            token_ids_B[:, None],
            attention_mask=self.mask,
            position_ids=self.last_positions[:, None],
            cache=self.cache,
            use_cache=True,
        )
        return self.base.lm_head(hidden[:, -1]).float()


@torch.no_grad()
def generate(
    base: BaseModel, rows: list[SampleRow], on_token: TokenCallback | None = None
) -> tuple[list[SampledSequence], list[list[float | None] | None]]:
    """Generate every row; returns sequences and (where asked) prompt log-probs, row order.

    `on_token`, when given, is called after each sampled token with the row's `origin`.
    """
    device = base.device
    batch = len(rows)
    prompt_len = max(len(r.prompt_tokens) for r in rows)
    input_ids = torch.full((batch, prompt_len), base.pad_token_id, dtype=torch.long)
    mask = torch.zeros((batch, prompt_len), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.prompt_tokens)
        input_ids[i, prompt_len - n :] = torch.tensor(row.prompt_tokens)
        mask[i, prompt_len - n :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    cache = DynamicCache(config=base.model.config)
    segments = _segments(rows)
    prompt_logprobs: list[list[float | None] | None] = [None] * batch

    with base.routing.use(segments):
        hidden = base.hidden_states(
            input_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        )
        for i, row in enumerate(rows):
            if row.want_prompt_logprobs:
                n = len(row.prompt_tokens)
                h = hidden[i, prompt_len - n : prompt_len - 1]
                targets = torch.tensor(row.prompt_tokens[1:], device=device)
                lp = target_logprobs(base, h, targets, [(row.adapter_key, 0, n - 1)])
                prompt_logprobs[i] = [None] + lp.tolist()
        logits_BV = base.lm_head(hidden[:, -1]).float()
        weights = base.decode_weights()
        if weights is not None:
            max_new = max(row.params.max_tokens for row in rows)
            lengths = [len(row.prompt_tokens) for row in rows]
            mode = base.decode_mode
            if mode == "4bit" and batch > MAX_4BIT_ROWS:
                mode = "exact"
            stepper = LlamaDecoder(weights, cache, lengths, max_new, segments, mode)
            del cache  # its tensors were copied into the static cache
        else:
            stepper = HFStepper(base, cache, mask, positions)
        counts = [TokenCounts(r.params, r.prompt_tokens, logits_BV.shape[-1], device) for r in rows]
        grammars = grammar_states(rows, base.tokenizer, logits_BV.shape[-1], device)
        done = [False] * batch
        while True:
            next_tokens = []
            for i, row in enumerate(rows):
                if done[i]:
                    next_tokens.append(base.pad_token_id)
                    continue
                grammar = grammars[i]
                allowed = grammar.allowed_V() if grammar is not None else None
                token, logprob, top = choose(
                    logits_BV[i], row.params, row.generator, counts[i], allowed
                )
                row.tokens.append(token)
                row.logprobs.append(logprob)
                if row.params.top_logprobs:
                    row.top_logprobs.append(top)
                if counts[i].active:
                    counts[i].add(token)
                if on_token is not None:
                    on_token(row.origin[0], row.origin[1], token, logprob)
                grammar_done = grammar is not None and grammar.ends_with(token, row.params)
                done[i] = _check_stop(row, base.tokenizer, grammar_done)
                next_tokens.append(token)
            if all(done):
                break
            logits_BV = stepper.step(torch.tensor(next_tokens, device=device))
    return [_finish(row, base.tokenizer) for row in rows], prompt_logprobs
