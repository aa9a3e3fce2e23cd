"""One row's grammar while it decodes: which tokens it allows next, and advancing it.

A row with `SamplingParams.grammar` gets a `GrammarState` (an llguidance matcher); each step the
sampler asks for `allowed_V` (a bool mask on the logits' device, CPU or CUDA) before choosing,
then `advance`s it with the chosen token. Rows without a grammar get None and cost nothing, so
rows of one batch can each have their own grammar or none.

The mask is computed on the CPU by llguidance (a bit per token, ~5 µs) and unpacked on the
logits' device; llguidance's own `apply_token_bitmask_inplace` is not used because it
`torch.compile`s on first use, which costs seconds on a CPU server.

This module knows nothing about batches, models or HTTP.
"""

from __future__ import annotations

import torch
from llguidance import LLMatcher

from frontier_signal.engine.structured import grammar_tokenizer

_SHIFTS_32 = torch.arange(32, dtype=torch.int32)


class GrammarState:
    """An llguidance matcher over one row's generated tokens."""

    def __init__(self, grammar: str, tokenizer, vocab: int, device):
        lltok = grammar_tokenizer(tokenizer)
        self.matcher = LLMatcher(lltok, grammar, log_level=0)
        if self.matcher.is_error():
            raise ValueError(f"grammar does not compile: {self.matcher.get_error()}")
        self.vocab, self.device = vocab, torch.device(device)
        self.words = (lltok.vocab_size + 31) // 32
        self.shifts = _SHIFTS_32.to(self.device)

    @property
    def stopped(self) -> bool:
        """The grammar is complete and allows nothing more (the row should end)."""
        return self.matcher.is_stopped()

    def allowed_V(self) -> torch.Tensor:
        """Bool mask over the logits' vocabulary: True where the grammar allows the token."""
        words = torch.frombuffer(bytearray(self.matcher.compute_bitmask()), dtype=torch.int32)
        words = words.to(self.device, non_blocking=True)
        bits = ((words[:, None] >> self.shifts) & 1).reshape(-1).bool()
        if bits.shape[0] >= self.vocab:
            return bits[: self.vocab]
        # The model's vocabulary is padded past the tokenizer's: padding is never allowed.
        return torch.cat([bits, bits.new_zeros(self.vocab - bits.shape[0])])

    def ends_with(self, token: int, params) -> bool:
        """Feed the chosen token; True when the row must end there: a stop token, the grammar
        complete, or (never expected, the mask prevents it) a token the grammar refused."""
        if token in params.stop_token_ids:
            return True
        return not self.matcher.consume_token(token) or self.matcher.is_stopped()


def grammar_states(rows, tokenizer, vocab: int, device) -> list[GrammarState | None]:
    """A state for each row that has a grammar, None for the others."""
    return [
        GrammarState(row.params.grammar, tokenizer, vocab, device) if row.params.grammar else None
        for row in rows
    ]
