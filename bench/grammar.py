"""The cost of constrained decoding: the engine's decode with vs without a grammar, one run.

On SmolLM2-135M-Instruct (or `--model frontier-signal/tiny-llama`), the same chat prompts,
sampled (temperature 0.8, fixed seeds), at batch 1 and at batch 8 (8 prompts in one
`sample_batch`):

- `plain`: free text, `--tokens` tokens each (no stop token);
- `json_schema`: the same prompts asking for JSON, with a JSON-schema grammar (an object whose
  one string field holds the answer, so the row runs about as long as the plain one);
- `plain_in_grammar_batch` (batch 8 only): 4 plain rows and 4 grammar rows in one batch.

Reported per configuration: generated tokens, seconds, tokens/s, and the grammar's ratio to plain
(tokens/s) with the added time per generated token. A grammar row stops when its JSON is
complete, so rows are compared by tokens/s, not by wall time. Best of `--repeats`, since the
machine may be shared. Prints one JSON object.

    .venv/bin/python bench/grammar.py [--tokens 64] [--repeats 2] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving import QUESTIONS  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 40}, "answer": {"type": "string"}},
    "required": ["title", "answer"],
    "additionalProperties": False,
}


def _timed(engine, requests, repeats: int) -> tuple[float, int]:
    """(best seconds, generated tokens) of one `sample_batch` over `requests`."""
    best, tokens = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        results = engine.sample_batch(requests)
        seconds = time.perf_counter() - start
        if seconds < best:
            best = seconds
            tokens = sum(len(s.tokens) for r in results for s in r.sequences)
    return best, tokens


def _grammar_work_ms(engine, model: str, requests, repeats: int) -> float:
    """Milliseconds per token of the grammar's own work (mask + unpack + apply + advance),
    replaying the tokens a constrained batch generated: the part of the cost that does not
    depend on how loaded the machine's model forward is."""
    import torch

    from frontier_signal.backend.constrained import GrammarState

    base = engine.load_model(model)
    results = engine.sample_batch(requests)
    best = float("inf")
    for _ in range(repeats):
        tokens, start = 0, time.perf_counter()
        for request, result in zip(requests, results, strict=True):
            for sequence in result.sequences:
                state = GrammarState(request.params.grammar, base.tokenizer, base.vocab_size, "cpu")
                logits = torch.zeros(base.vocab_size)
                for token in sequence.tokens:
                    logits.masked_fill(~state.allowed_V(), -torch.inf)
                    state.ends_with(token, request.params)
                    tokens += 1
        best = min(best, (time.perf_counter() - start) * 1000 / max(tokens, 1))
    return best


def _figure(seconds: float, tokens: int) -> dict:
    return {"tokens": tokens, "seconds": round(seconds, 3), "tok_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.rendering import render_chat_prompt
    from frontier_signal.engine.structured import json_schema_grammar
    from frontier_signal.engine.types import SampleRequest, SamplingParams

    engine = Engine()
    tokenizer = engine.tokenizer(args.model)
    grammar = json_schema_grammar(SCHEMA)

    def request(index: int, constrained: bool) -> SampleRequest:
        ask = QUESTIONS[index] + (
            " Answer as JSON with a title and an answer." if constrained else ""
        )
        prompt = render_chat_prompt(tokenizer, [{"role": "user", "content": ask}])
        params = SamplingParams(
            args.tokens, 0.8, seed=index, grammar=grammar if constrained else ""
        )
        return SampleRequest(args.model, prompt, params)

    _timed(engine, [request(0, True), request(1, False)], 1)  # load, compile the tokenizer view
    figures: dict = {
        "model": args.model,
        "device": str(engine.load_model(args.model).device),
        "threads": torch.get_num_threads(),
        "max_tokens": args.tokens,
    }
    for batch in (1, 8):
        plain = _timed(engine, [request(i, False) for i in range(batch)], args.repeats)
        constrained = _timed(engine, [request(i, True) for i in range(batch)], args.repeats)
        row = {"plain": _figure(*plain), "json_schema": _figure(*constrained)}
        plain_per_token = plain[0] / plain[1]
        grammar_per_token = constrained[0] / constrained[1]
        row["grammar_vs_plain_tok_s"] = round(plain_per_token / grammar_per_token, 3)
        row["added_ms_per_token"] = round((grammar_per_token - plain_per_token) * 1000, 3)
        if batch == 1:
            work = _grammar_work_ms(engine, args.model, [request(0, True)], args.repeats)
            row["grammar_work_ms_per_token"] = round(work, 3)
            row["grammar_work_share_of_plain_token"] = round(work / (plain_per_token * 1000), 4)
        if batch == 8:
            mixed = [request(i, i % 2 == 0) for i in range(batch)]
            row["plain_in_grammar_batch"] = _figure(*_timed(engine, mixed, args.repeats))
        figures[f"batch_{batch}"] = row
        print(json.dumps({f"batch_{batch}": row}), file=sys.stderr, flush=True)  # progress
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
