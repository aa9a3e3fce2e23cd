"""API overhead: forward_backward through HTTP + the SDK vs the in-process engine, same work.

One process holds both: an in-process `Engine` and an embedded server (the real app: uvicorn,
SQLite store, request log, scheduler thread) driven by `SignalClient`. Both run the same
rank-32 attention+MLP LoRA on SmolLM2-135M-Instruct over the same `{"text"}` example of exactly
`--tokens` tokens (mean loss, accumulate=False), alternating in-process and HTTP calls so drift
hits both alike. Prints JSON: median seconds per call and the ratio (target ≤ 1.10 at 1×128).

The `tinker_sdk` part does the same for the official tinker 0.38 SDK (skipped when it is not
installed): its `forward_backward` goes out as protobuf (zstd-compressed, as the server's client
config asks), results come back as protobuf, against the in-process engine doing the same Tinker
work (rank-32 attention+MLP LoRA with alpha 32, summed cross-entropy, gradient accumulated).

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
        tinker_figures = _tinker_sdk(engine, server.base_url, datums, args.repeats)
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
                "tinker_sdk": tinker_figures,
            },
            indent=2,
        )
    )


def _tinker_sdk(engine, base_url: str, datums, repeats: int) -> dict | None:
    """forward_backward through tinker 0.38 (protobuf) vs in-process, same Tinker work."""
    try:
        import tinker
    except ImportError:
        return None
    from frontier_signal.engine.types import LoraSpec, OptimizerSpec, RunConfig

    config = RunConfig(MODEL, LoraSpec(rank=32, alpha=32), OptimizerSpec(), 2048, False)
    run_id = engine.create_run(config).run_id
    wire = [
        tinker.types.Datum(
            model_input=tinker.types.ModelInput.from_ints(d.input_tokens),
            loss_fn_inputs={"target_tokens": d.target_tokens},
        )
        for d in datums
    ]
    service = tinker.ServiceClient(base_url=base_url, api_key="tml-local")  # no-auth server
    training = service.create_lora_training_client(
        base_model=MODEL, rank=32, train_attn=True, train_mlp=True, train_unembed=False
    ).result()
    in_process, over_sdk = [], []
    for repeat in range(repeats + 2):  # the first two of each are warm-up
        started = time.perf_counter()
        engine.forward_backward(run_id, datums, reduction="sum", accumulate=True)
        elapsed_engine = time.perf_counter() - started
        started = time.perf_counter()
        training.forward_backward(wire, "cross_entropy").result()
        elapsed_sdk = time.perf_counter() - started
        if repeat >= 2:
            in_process.append(elapsed_engine)
            over_sdk.append(elapsed_sdk)
    service.close("success").result()
    engine_median, sdk_median = statistics.median(in_process), statistics.median(over_sdk)
    return {
        "sdk": f"tinker {tinker.__version__} (protobuf, zstd)",
        "in_process_seconds_median": round(engine_median, 4),
        "sdk_seconds_median": round(sdk_median, 4),
        "overhead_ms": round((sdk_median - engine_median) * 1000, 1),
        "ratio_sdk_over_in_process": round(sdk_median / engine_median, 3),
        "target_ratio": 1.10,
    }


if __name__ == "__main__":
    main()
