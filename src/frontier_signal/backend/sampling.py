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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from frontier_signal.backend.base_model import BaseModel
from frontier_signal.backend.constrained import grammar_states
from frontier_signal.backend.llama_decode import MAX_4BIT_ROWS, LlamaDecoder
from frontier_signal.backend.lora import Segment
from frontier_signal.backend.prefill import prefill
from frontier_signal.backend.prefix_cache import PrefixCache
from frontier_signal.backend.token_choice import TokenCounts, TopLogprobs, choose
from frontier_signal.engine.types import (
    SampledSequence,
    SampleRequest,
    SampleResult,
    SamplingParams,
    TokenCallback,
)


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
    stop_reason: Literal["", "stop", "length", "cancelled"] = ""  # "": not finished
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
    if not row.stop_reason:
        raise ValueError("a row is decoded once it has finished")
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


class Generation:
    """One batch of rows being generated, resumable: the prompt is run when it is made, then
    `advance(steps)` decodes up to `steps` more tokens per row and returns, keeping the KV
    cache, logits and per-row state, so other work can use the model between slices (the
    scheduler's interleaving). `stop(which)` ends chosen rows early (a cancelled request).

    `on_token`, when given, is called after each sampled token with the row's `origin`.
    """

    @torch.no_grad()
    def __init__(
        self,
        base: BaseModel,
        rows: list[SampleRow],
        on_token: TokenCallback | None,
        prefix_cache: PrefixCache | None = None,
        identities: dict[str, str] | None = None,
    ):
        self.base, self.rows, self.on_token = base, rows, on_token
        self.segments = _segments(rows)
        self.done = [False] * len(rows)
        with base.routing.use(self.segments):
            self._prefill(prefix_cache, identities)

    def _prefill(self, prefix_cache: PrefixCache | None, identities: dict[str, str] | None) -> None:
        """The prompt pass (`prefill`: identical prompts once, cached prefixes reused), then the
        decoder that continues from its cache."""
        base, rows = self.base, self.rows
        pre = prefill(base, rows, prefix_cache, identities)
        self.prompt_logprobs: list[list[float | None] | None] = pre.prompt_logprobs
        self.logits_BV: torch.Tensor | None = pre.logits
        weights = base.decode_weights()
        self.stepper: LlamaDecoder | HFStepper | None
        if weights is not None:
            max_new = max(row.params.max_tokens for row in rows)
            lengths = [len(row.prompt_tokens) for row in rows]
            mode = base.decode_mode
            if mode == "4bit" and len(rows) > MAX_4BIT_ROWS:
                mode = "exact"
            self.stepper = LlamaDecoder(weights, pre.cache, lengths, max_new, self.segments, mode)
            del pre  # its tensors were copied into the static cache
        else:
            self.stepper = HFStepper(base, pre.cache, pre.mask, pre.positions)
        vocab = self.logits_BV.shape[-1]
        self.counts = [TokenCounts(r.params, r.prompt_tokens, vocab, base.device) for r in rows]
        self.grammars = grammar_states(rows, base.tokenizer, vocab, base.device)

    @property
    def finished(self) -> bool:
        return all(self.done)

    def stop(self, which) -> int:
        """End the rows whose `origin` satisfies `which(origin)` now (stop reason `cancelled`);
        returns how many were still generating."""
        stopped = 0
        for i, row in enumerate(self.rows):
            if not self.done[i] and which(row.origin):
                self.done[i], row.stop_reason = True, "cancelled"
                stopped += 1
        if self.finished:
            self.release()
        return stopped

    def release(self) -> None:
        """Free the cache (the rows keep their tokens)."""
        self.stepper = self.logits_BV = None

    @torch.no_grad()
    def advance(self, steps: int) -> bool:
        """Choose up to `steps` more tokens per unfinished row; True once every row is done."""
        base, rows, done = self.base, self.rows, self.done
        with base.routing.use(self.segments):
            for _ in range(steps):
                if self.finished:
                    break
                next_tokens = []
                for i, row in enumerate(rows):
                    if done[i]:
                        next_tokens.append(base.pad_token_id)
                        continue
                    token = self._choose(i, row)
                    grammar = self.grammars[i]
                    grammar_done = grammar is not None and grammar.ends_with(token, row.params)
                    done[i] = _check_stop(row, base.tokenizer, grammar_done)
                    next_tokens.append(token)
                if self.finished or self.stepper is None:  # no stepper: released
                    break
                self.logits_BV = self.stepper.step(torch.tensor(next_tokens, device=base.device))
        if self.finished:
            self.release()
        return self.finished

    def _choose(self, i: int, row: SampleRow) -> int:
        assert self.logits_BV is not None
        grammar = self.grammars[i]
        allowed = grammar.allowed_V() if grammar is not None else None
        token, logprob, top = choose(
            self.logits_BV[i], row.params, row.generator, self.counts[i], allowed
        )
        row.tokens.append(token)
        row.logprobs.append(logprob)
        if row.params.top_logprobs:
            row.top_logprobs.append(top)
        if self.counts[i].active:
            self.counts[i].add(token)
        if self.on_token is not None:
            self.on_token(row.origin[0], row.origin[1], token, logprob)
        return token

    def results(self) -> tuple[list[SampledSequence], list[list[float | None] | None]]:
        """Sequences and (where asked) prompt log-probs, in row order."""
        return [_finish(row, self.base.tokenizer) for row in self.rows], self.prompt_logprobs

    def row_result(self, index: int) -> tuple[SampledSequence, list[float | None] | None]:
        """One row's sequence and prompt log-probs (it may be done before the others)."""
        return _finish(self.rows[index], self.base.tokenizer), self.prompt_logprobs[index]


def generate(
    base: BaseModel,
    rows: list[SampleRow],
    on_token: TokenCallback | None = None,
    prefix_cache: PrefixCache | None = None,
    identities: dict[str, str] | None = None,
) -> tuple[list[SampledSequence], list[list[float | None] | None]]:
    """Generate every row to the end; returns sequences and (where asked) prompt log-probs,
    row order. `on_token`, when given, is called after each sampled token with the row's
    `origin`. The prompt pass shares identical prompts and, given a `prefix_cache` and the
    adapters' `identities`, reuses cached prefixes."""
    generation = Generation(base, rows, on_token, prefix_cache, identities)
    while not generation.advance(1 << 30):
        pass
    return generation.results()


class SamplingJob:
    """Sampling in progress: one `Generation` per base model. `advance(steps)` decodes up to
    `steps` tokens per row and returns, so the scheduler can run other work between slices;
    `stop(indices)` ends the rows of those requests (a cancelled caller); the results of a
    request are ready once it is in `done_requests()` (a short request batched with a long one
    need not wait for it)."""

    def __init__(
        self,
        requests: list[SampleRequest],
        generations: list[tuple[list[int], Generation]],
        on_release: Callable[[], None] | None = None,
    ):
        self.requests = requests
        self.generations = generations  # (request index of each row, its generation)
        self.on_release = on_release  # e.g. unpin the job's adapters (called once)

    def advance(self, steps: int) -> bool:
        for _, generation in self.generations:
            if not generation.finished:
                generation.advance(steps)
        if self.finished:
            self.release()
        return self.finished

    def release(self) -> None:
        """Free every generation's cache and what the job holds (idempotent); called when it
        finishes, or by whoever abandons it."""
        for _, generation in self.generations:
            generation.release()
        on_release, self.on_release = self.on_release, None
        if on_release is not None:
            on_release()

    @property
    def finished(self) -> bool:
        return all(generation.finished for _, generation in self.generations)

    def stop(self, request_indices: set[int]) -> int:
        """End the rows of these requests now; returns how many were still generating."""
        stopped = sum(
            g.stop(lambda origin: origin[0] in request_indices) for _, g in self.generations
        )
        if self.finished:
            self.release()
        return stopped

    def done_requests(self) -> set[int]:
        """Requests whose every row is done (their results can be handed out already)."""
        pending = {
            index
            for indices, generation in self.generations
            for row, index in enumerate(indices)
            if not generation.done[row]
        }
        return set(range(len(self.requests))) - pending

    def results(self, only: set[int] | None = None) -> list[SampleResult]:
        """One result per request, in order; with `only`, the others stay empty."""
        results = [SampleResult([]) for _ in self.requests]
        for indices, generation in self.generations:
            for row, index in enumerate(indices):
                if only is not None and index not in only:
                    continue
                sequence, prompt_lp = generation.row_result(row)
                results[index].sequences.append(sequence)
                if self.requests[index].prompt_logprobs:
                    results[index].prompt_logprobs = prompt_lp
        return results
