"""Batched autoregressive sampling with a KV cache, for rows of many runs at once.

Prompts are left-padded into one batch (attention mask + explicit positions), each row carries
its own adapter, decoding settings and random generator, so a row's output does not depend on
what else is in the batch. The prompt goes through the HF forward (`prefill`: once per distinct
prompt, cached prefixes reused; its hidden states also give prompt log-probs); decoding then runs
on `llama_decode.LlamaDecoder` (a static cache and a compact step, several times less overhead
per token) for Llama-family models, and on the HF forward with a `DynamicCache` for anything
else. How a token is chosen from logits is `token_choice`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from frontier_signal.backend.base_model import BaseModel
from frontier_signal.backend.llama_decode import MAX_4BIT_ROWS, LlamaDecoder
from frontier_signal.backend.lora import Segment
from frontier_signal.backend.prefill import prefill
from frontier_signal.backend.prefix_cache import PrefixCache
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


def _check_stop(row: SampleRow, tokenizer) -> bool:
    params = row.params
    if row.tokens[-1] in params.stop_token_ids:
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
    if row.stop_reason == "stop" and row.text_end < 0 and row.tokens:
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
    base: BaseModel,
    rows: list[SampleRow],
    on_token: TokenCallback | None = None,
    prefix_cache: PrefixCache | None = None,
    identities: dict[str, str] | None = None,
) -> tuple[list[SampledSequence], list[list[float | None] | None]]:
    """Generate every row; returns sequences and (where asked) prompt log-probs, row order.

    `on_token`, when given, is called after each sampled token with the row's `origin`. The
    prompt pass (`prefill`) shares identical prompts and, given a `prefix_cache` and the
    adapters' `identities`, reuses cached prefixes.
    """
    device = base.device
    batch = len(rows)
    pre = prefill(base, rows, prefix_cache, identities)
    logits_BV, prompt_logprobs = pre.logits, pre.prompt_logprobs
    segments = _segments(rows)
    with base.routing.use(segments):
        weights = base.decode_weights()
        if weights is not None:
            max_new = max(row.params.max_tokens for row in rows)
            lengths = [len(row.prompt_tokens) for row in rows]
            mode = base.decode_mode
            if mode == "4bit" and batch > MAX_4BIT_ROWS:
                mode = "exact"
            stepper = LlamaDecoder(weights, pre.cache, lengths, max_new, segments, mode)
            del pre  # its tensors were copied into the static cache
        else:
            stepper = HFStepper(base, pre.cache, pre.mask, pre.positions)
        counts = [TokenCounts(r.params, r.prompt_tokens, logits_BV.shape[-1], device) for r in rows]
        done = [False] * batch
        while True:
            next_tokens = []
            for i, row in enumerate(rows):
                if done[i]:
                    next_tokens.append(base.pad_token_id)
                    continue
                token, logprob, top = choose(logits_BV[i], row.params, row.generator, counts[i])
                row.tokens.append(token)
                row.logprobs.append(logprob)
                if row.params.top_logprobs:
                    row.top_logprobs.append(top)
                if counts[i].active:
                    counts[i].add(token)
                if on_token is not None:
                    on_token(row.origin[0], row.origin[1], token, logprob)
                done[i] = _check_stop(row, base.tokenizer)
                next_tokens.append(token)
            if all(done):
                break
            logits_BV = stepper.step(torch.tensor(next_tokens, device=device))
    return [_finish(row, base.tokenizer) for row in rows], prompt_logprobs
