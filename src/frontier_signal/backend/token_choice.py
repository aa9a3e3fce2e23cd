"""Choosing one row's next token from its logits: penalties, temperature, top-k/top-p, sampling.

The order is that of HF and vLLM: the grammar's mask (tokens a row's grammar refuses become
-inf, backend/constrained.py), `logit_bias` (OpenAI: added to the raw logits), repetition
penalty (HF semantics: prompt and generated tokens, a positive logit divided by the penalty, a
negative one multiplied), then presence and frequency penalties (OpenAI semantics: over
generated tokens only, `logit -= count * frequency + (count > 0) * presence`), then
temperature, then top-k / top-p / min-p truncation, then one uniform draw from the row's own
generator through the inverse of the kept tokens' cumulative distribution (reproducible per row,
independent of the batch). The reported log-prob (and the
`top_logprobs` alternatives) are those of the distribution sampled from: masked, biased,
penalised logits / temperature before truncation; the same without temperature when greedy.

This module knows nothing about models or batches: one row's logits in, one token out.
"""

from __future__ import annotations

import torch

from frontier_signal.engine.types import SamplingParams

TopLogprobs = list[tuple[int, float]]


class TokenCounts:
    """What the penalties need to know about a row's tokens, kept on the logits' device."""

    def __init__(self, params: SamplingParams, prompt_tokens: list[int], vocab: int, device):
        self.params = params
        self.counts_V: torch.Tensor | None = None
        self.seen_V: torch.Tensor | None = None
        if params.presence_penalty or params.frequency_penalty:
            self.counts_V = torch.zeros(vocab, device=device)
        if params.repetition_penalty != 1.0:
            self.seen_V = torch.zeros(vocab, dtype=torch.bool, device=device)
            self.seen_V[torch.tensor(prompt_tokens, device=device)] = True

    @property
    def active(self) -> bool:
        return self.counts_V is not None or self.seen_V is not None

    def add(self, token: int) -> None:
        if self.counts_V is not None:
            self.counts_V[token] += 1
        if self.seen_V is not None:
            self.seen_V[token] = True

    def apply(self, logits_V: torch.Tensor) -> torch.Tensor:
        params = self.params
        if self.seen_V is not None:
            penalty = params.repetition_penalty
            scaled = torch.where(logits_V > 0, logits_V / penalty, logits_V * penalty)
            logits_V = torch.where(self.seen_V, scaled, logits_V)
        if self.counts_V is not None:
            logits_V = logits_V - self.counts_V * params.frequency_penalty
            logits_V = logits_V - (self.counts_V > 0).to(logits_V.dtype) * params.presence_penalty
        return logits_V


def _top(logprobs_V: torch.Tensor, k: int) -> TopLogprobs:
    if k <= 0:
        return []
    values, ids = logprobs_V.topk(min(k, logprobs_V.shape[0]))
    # Tokens a grammar or a -100 bias ruled out are not alternatives (and -inf is not JSON).
    return [(i, v) for i, v in zip(ids.tolist(), values.tolist(), strict=True) if v > -1e30]


def _biased(logits_V: torch.Tensor, params: SamplingParams, allowed_V) -> torch.Tensor:
    if params.logit_bias:
        ids = torch.tensor([t for t, _ in params.logit_bias], device=logits_V.device)
        values = torch.tensor([b for _, b in params.logit_bias], device=logits_V.device)
        logits_V = logits_V.index_add(0, ids, values.to(logits_V.dtype))
    if allowed_V is not None:
        logits_V = logits_V.masked_fill(~allowed_V, -torch.inf)
    return logits_V


TOP_P_FIRST = 64  # candidates `top_p_filter` looks at first (x 8 until the nucleus fits)


def top_p_filter(logprobs_V: torch.Tensor, top_p: float) -> torch.Tensor:
    """The smallest set of most likely tokens whose probability reaches `top_p` (the token that
    crosses it kept), the others -inf: HF's and vLLM's nucleus. `logprobs_V` must be normalized
    (its exp sums to 1).

    From the largest log-probs by `topk`, 64 first and 8 times more until their sum crosses
    `top_p` (no token beyond can be kept then); past a quarter of the vocabulary one full sort.
    Sorting all 49,152 of SmolLM2's took 3.4-3.9 ms a row and token on this CPU, more than a
    decode step, for a nucleus of 3-20 tokens at the median (at most 2,235: temperature 1,
    top_p 0.95, over a paragraph of text); the first `topk` takes 0.09 ms.
    """
    size, k = logprobs_V.shape[0], TOP_P_FIRST
    while True:
        if k * 4 >= size:
            k = size
            values, ids = logprobs_V.sort(descending=True)
        else:
            values, ids = logprobs_V.topk(k)  # sorted, largest first
        probs = values.exp()
        cumulative = probs.cumsum(-1)
        if k == size or cumulative[-1] > top_p:
            break
        k *= 8
    keep = ids[~(cumulative - probs > top_p)]  # the mass before each token has not passed top_p
    out = torch.full_like(logprobs_V, -torch.inf)
    out[keep] = logprobs_V[keep]
    return out


def choose(
    logits_V: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
    counts: TokenCounts | None = None,
    allowed_V: torch.Tensor | None = None,
) -> tuple[int, float, TopLogprobs]:
    """(token, its log-prob, the `params.top_logprobs` most likely alternatives).

    `allowed_V`, when given, is a bool mask of the tokens a grammar allows (at least one).
    """
    if params.logit_bias or allowed_V is not None:
        logits_V = _biased(logits_V, params, allowed_V)
    if counts is not None and counts.active:
        logits_V = counts.apply(logits_V)
    if params.temperature <= 0:
        logprobs_V = logits_V.log_softmax(-1)
        token = int(logprobs_V.argmax())
        return token, float(logprobs_V[token]), _top(logprobs_V, params.top_logprobs)
    logprobs_V = (logits_V / params.temperature).log_softmax(-1)
    filtered = logprobs_V
    if 0 < params.top_k < filtered.shape[0]:
        kth = filtered.topk(params.top_k).values[-1]
        filtered = filtered.masked_fill(filtered < kth, -torch.inf)
        if params.top_p < 1.0:  # top-p over the top-k tokens' own distribution (HF, vLLM)
            filtered = filtered - filtered.logsumexp(-1)
    if params.top_p < 1.0:
        filtered = top_p_filter(filtered, params.top_p)
    if params.min_p > 0:
        # min-p (vLLM, HF): keep tokens at least min_p times as likely as the most likely one.
        floor = filtered.max() + torch.log(torch.tensor(params.min_p, device=filtered.device))
        filtered = filtered.masked_fill(filtered < floor, -torch.inf)
    token = _draw(filtered, generator)
    return token, float(logprobs_V[token]), _top(logprobs_V, params.top_logprobs)


def _draw(logprobs_V: torch.Tensor, generator: torch.Generator) -> int:
    """A token drawn in proportion to exp(logprobs_V) (-inf: never): one uniform, drawn on the
    CPU with the row's generator so a seed gives the same tokens on any device, through the
    fp64 cumulative sum. Gumbel-max draws as exactly but needs a uniform a token: 0.31 vs 0.10
    ms a row of SmolLM2's 49,152 on this CPU."""
    cumulative = logprobs_V.double().exp_().cumsum_(0)
    uniform = torch.rand((), generator=generator, dtype=torch.float64, device="cpu")
    point = (uniform.to(cumulative.device) * cumulative[-1]).reshape(1)
    # Past the end only where the sums are not numbers (a diverged run's NaN logits): a token
    # still comes back, as an argmax over them gives one.
    return min(int(torch.searchsorted(cumulative, point, right=True)), len(cumulative) - 1)
