"""API overhead: forward_backward through HTTP + the SDK vs the in-process engine, same work.

One process holds both: an in-process `Engine` and an embedded server (the real app: uvicorn,
SQLite store, request log, scheduler thread) driven by `SignalClient`. Both run the same
rank-32 attention+MLP LoRA on SmolLM2-135M-Instruct over the same `{"text"}` example of exactly
`--tokens` tokens (mean loss, accumulate=False), alternating in-process and HTTP calls so drift
hits both alike. Prints JSON: median seconds per call and the ratio (target ≤ 1.10 at 1×128).

    .venv/bin/python bench/api_overhead.py [--tokens 128] [--batch 1] [--repeats 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _text_of(tokenizer, tokens: int) -> str:
    words = ("the quick brown fox jumps over a lazy dog while seven wizards box " * 200).split()
    text = " ".join(words[:tokens])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()

    from frontier_signal import SignalClient
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.types import LoraSpec, OptimizerSpec, RunConfig
    from frontier_signal.server.embedded import EmbeddedServer
    from frontier_signal.service.settings import ServiceSettings

    engine = Engine()
    tokenizer = engine.tokenizer(MODEL)
    batch = [{"text": _text_of(tokenizer, args.tokens)} for _ in range(args.batch)]
    config = RunConfig(MODEL, LoraSpec(rank=32, alpha=64), OptimizerSpec(), 2048, False)
    run_id = engine.create_run(config).run_id
    datums = [r.datum for r in engine.render(MODEL, batch, 2048)]
    tokens = sum(len(d.input_tokens) + 1 for d in datums)

    settings = ServiceSettings(
        data_dir=tempfile.mkdtemp(prefix="fs-bench-"), models=[MODEL], no_auth=True
    )
    with EmbeddedServer(settings) as server, SignalClient("local", server.base_url) as client:
        server.wait_ready()
        run = client.create_run(base_model=MODEL, gradient_checkpointing=False, seed=0)
        in_process, over_http = [], []
        for repeat in range(args.repeats + 2):  # the first two of each are warm-up
            started = time.perf_counter()
            engine.forward_backward(run_id, datums, reduction="mean", accumulate=False)
            elapsed_engine = time.perf_counter() - started
            started = time.perf_counter()
            run.forward_backward(batch)
            elapsed_http = time.perf_counter() - started
            if repeat >= 2:
                in_process.append(elapsed_engine)
                over_http.append(elapsed_http)
    engine_median, http_median = statistics.median(in_process), statistics.median(over_http)
    print(
        json.dumps(
            {
                "benchmark": "api_overhead",
                "model": MODEL,
                "shape": f"{args.batch}x{tokens // args.batch}",
                "repeats": args.repeats,
                "in_process_seconds_median": round(engine_median, 4),
                "http_seconds_median": round(http_median, 4),
                "overhead_ms": round((http_median - engine_median) * 1000, 1),
                "ratio_http_over_in_process": round(http_median / engine_median, 3),
                "target_ratio": 1.10,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
