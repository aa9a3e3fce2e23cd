"""Choosing a token with top-p: our nucleus filter vs sorting the whole vocabulary, in one run.

SmolLM2-135M-Instruct's logits at every position of a paragraph of text (HF forward, fp32), at
temperatures 0.7 and 1.0 with top_p 0.9 and 0.95: the mean time a row of
`token_choice.top_p_filter` (the largest log-probs by `topk`, 64 first, wider until the nucleus
fits) against the filter over the fully sorted vocabulary it replaced, the same kept tokens
checked on every row, and the mean time of a whole `choose` (temperature, top-p, the draw).
The nucleus sizes are reported too. Prints one JSON object.

    .venv/bin/python bench/token_choice.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TEXT = (
    "Once upon a time, in a small village by the sea, there lived an old lighthouse keeper named "
    "Tom. Every night he climbed the stairs to light the lamp, and every morning he wrote in his "
    "journal about the ships he had seen. One stormy evening, a young girl knocked on his door "
    "asking for shelter."
)


def _by_sorting(logprobs_V, top_p: float):
    """The nucleus over the fully sorted vocabulary (the filter before `top_p_filter`)."""
    import torch

    ordered, order = logprobs_V.sort(descending=True)
    drop = ordered.exp().cumsum(-1) - ordered.exp() > top_p
    out = logprobs_V.clone()
    out[order[drop]] = -torch.inf
    return out


def _mean_ms(function, rows: list, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for row in rows:
            function(row)
        best = min(best, time.perf_counter() - start)
    return best / len(rows) * 1e3


def _figures(logits: list, temperature: float, top_p: float, repeats: int) -> dict:
    import torch

    from frontier_signal.backend.token_choice import choose, top_p_filter
    from frontier_signal.engine.types import SamplingParams

    rows = [(row / temperature).log_softmax(-1) for row in logits]
    same = all(torch.equal(top_p_filter(r, top_p), _by_sorting(r, top_p)) for r in rows)
    sizes = sorted(int((top_p_filter(r, top_p) > -torch.inf).sum()) for r in rows)
    ours = _mean_ms(lambda r: top_p_filter(r, top_p), rows, repeats)
    sorting = _mean_ms(lambda r: _by_sorting(r, top_p), rows, repeats)
    params = SamplingParams(max_tokens=1, temperature=temperature, top_p=top_p)
    generator = torch.Generator().manual_seed(0)
    whole = _mean_ms(lambda r: choose(r, params, generator), logits, repeats)
    return {
        "nucleus_tokens": {"median": sizes[len(sizes) // 2], "max": sizes[-1]},
        "same_tokens_kept_on_every_row": same,
        "filter_ms_per_row": ours,
        "full_sort_filter_ms_per_row": sorting,
        "speedup": sorting / ours,
        "choose_ms_per_row": whole,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    args = parser.parse_args()

    import torch

    from frontier_signal.backend import models

    model = models.load_hf_model(MODEL, dtype=torch.float32)
    ids = models.load_tokenizer(MODEL)(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = list(model(ids).logits[0])
    report: dict = {"model": MODEL, "positions": len(logits), "vocabulary": logits[0].shape[0]}
    for temperature, top_p in ((0.7, 0.9), (1.0, 0.95)):
        key = f"temperature_{temperature}_top_p_{top_p}"
        report[key] = _figures(logits, temperature, top_p, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
