"""One row's token choice (backend/token_choice.py): the nucleus (top-p) filter against the
definition computed over the fully sorted vocabulary, and the draw's distribution."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.backend import token_choice
from frontier_signal.backend.token_choice import choose, top_p_filter
from frontier_signal.engine.types import SamplingParams


def _nucleus_by_sorting(logprobs_V: torch.Tensor, top_p: float) -> torch.Tensor:
    ordered, order = logprobs_V.sort(descending=True)
    drop = ordered.exp().cumsum(-1) - ordered.exp() > top_p
    out = logprobs_V.clone()
    out[order[drop]] = -torch.inf
    return out


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.99, 0.999999])
@pytest.mark.parametrize("spread", [0.3, 3.0, 10.0])
def test_the_nucleus_is_the_one_a_full_sort_gives(top_p, spread):
    """Peaked (the nucleus in the first 64 candidates) and flat logits (it takes the wider
    searches, up to the whole vocabulary) over a vocabulary of SmolLM2's size."""
    logits = torch.randn(49152, generator=torch.Generator().manual_seed(int(spread * 10))) * spread
    logprobs = logits.log_softmax(-1)
    got = top_p_filter(logprobs, top_p)
    assert torch.equal(got, _nucleus_by_sorting(logprobs, top_p))
    kept = got > -torch.inf
    assert logprobs[kept].exp().sum() >= min(top_p, 1 - 1e-4)
    if not kept.all():  # the most likely tokens, none left out above one kept
        assert logprobs[kept].min() >= logprobs[~kept].max()


def test_the_wider_searches_are_taken_when_64_candidates_do_not_reach_top_p(monkeypatch):
    sizes = []
    topk, sort = torch.Tensor.topk, torch.Tensor.sort

    def counted_topk(self, k, *args, **kwargs):
        sizes.append(k)
        return topk(self, k, *args, **kwargs)

    def counted_sort(self, *args, **kwargs):
        sizes.append("sort")
        return sort(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", counted_topk)
    monkeypatch.setattr(torch.Tensor, "sort", counted_sort)
    flat = torch.zeros(4096).log_softmax(-1)  # every token 1/4096
    assert int((top_p_filter(flat, 0.1) > -torch.inf).sum()) in (410, 411)  # crossing kept
    assert sizes == [token_choice.TOP_P_FIRST, 512]
    sizes.clear()
    assert int((top_p_filter(flat, 0.9) > -torch.inf).sum()) in (3687, 3688)
    assert sizes == [token_choice.TOP_P_FIRST, 512, "sort"]  # 4096: a quarter of it or more


def test_top_p_sampling_draws_only_from_the_nucleus():
    logits = torch.tensor([3.0, 2.5, 2.0, -1.0, -2.0, -5.0])
    params = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.8)
    nucleus = _nucleus_by_sorting(logits.log_softmax(-1), 0.8) > -torch.inf
    generator = torch.Generator().manual_seed(0)
    drawn = {choose(logits, params, generator)[0] for _ in range(300)}
    assert drawn == set(torch.nonzero(nucleus).flatten().tolist())


def test_top_p_after_top_k_is_over_the_top_k_tokens_own_distribution():
    """HF and vLLM renormalize after top-k: probabilities 0.4, 0.3, 0.2, 0.1 cut to the top 2
    are 4/7 and 3/7, so top_p 0.5 keeps the first alone (over the full distribution it would
    keep both: 0.4 has not reached 0.5)."""
    logits = torch.tensor([0.4, 0.3, 0.2, 0.1]).log()
    params = SamplingParams(max_tokens=1, temperature=1.0, top_k=2, top_p=0.5)
    generator = torch.Generator().manual_seed(0)
    assert {choose(logits, params, generator)[0] for _ in range(200)} == {0}
    wider = SamplingParams(max_tokens=1, temperature=1.0, top_k=2, top_p=0.6)
    assert {choose(logits, wider, generator)[0] for _ in range(200)} == {0, 1}


def test_the_draw_follows_the_distribution_and_never_takes_a_ruled_out_token():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -torch.inf, 0.5])
    params = SamplingParams(max_tokens=1, temperature=1.0)
    generator = torch.Generator().manual_seed(3)
    draws = torch.tensor([choose(logits, params, generator)[0] for _ in range(6000)])
    frequencies = torch.bincount(draws, minlength=6).double() / len(draws)
    expected = logits.double().softmax(-1)
    assert frequencies[4] == 0
    # 6,000 draws: a frequency's standard deviation is at most 0.0065; 4 of them.
    assert (frequencies - expected).abs().max() < 0.026


def test_a_seed_draws_the_same_tokens_and_other_seeds_others():
    logits = torch.randn(49152, generator=torch.Generator().manual_seed(5)) * 2
    params = SamplingParams(max_tokens=1, temperature=1.0)

    def tokens(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [choose(logits, params, generator)[0] for _ in range(20)]

    assert tokens(1) == tokens(1)
    assert tokens(1) != tokens(2)


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_logits_that_are_not_numbers_still_give_a_token(top_p):
    """A diverged run's NaN logits: garbage in, a token out (not an index past the vocabulary)."""
    logits = torch.full((100,), torch.nan)
    params = SamplingParams(max_tokens=1, temperature=1.0, top_p=top_p)
    token, _, _ = choose(logits, params, torch.Generator().manual_seed(0))
    assert 0 <= token < 100
