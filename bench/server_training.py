"""Training through the server with the SDK's defaults vs a plain HF PEFT fp32 loop, same tokens.

One process holds both: an embedded server (the real app: uvicorn, SQLite, scheduler thread)
driven by `SignalClient`, and the loop a user would write by hand (fp32 SmolLM2-135M-Instruct,
`get_peft_model` r=32 on attention + MLP, `loss.backward()`, `AdamW.step()`, on the CPUs other
processes leave free, as the engine does). Rounds alternate
between them so drift hits all alike; the figure per side is its best round (a shared machine).

Server runs: `create_run(base_model=...)` with the SDK's defaults (r=32, alpha=64, every attention
and MLP linear, adamw_8bit, bf16 where the CPU has it, gradient_checkpointing=True, honoured),
and the same with `gradient_checkpointing=False`. A step is `forward_backward` of `--batch`
`{"text"}` examples of `--tokens` tokens, then `optim_step`. The machine's bf16 matmul peak is
measured first and each figure is also given as % of the bf16 training limit (4·N FLOPs/token).

    .venv/bin/python bench/server_training.py [--batch 4] [--tokens 128] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from api_overhead import MODEL, _text_of  # noqa: E402
from train_throughput import TARGETS, bf16_peak_gflops  # noqa: E402

N_PARAMS = 134_515_008


def _peft_loop(batch: int, tokens: int):
    import torch
    from peft import LoraConfig, get_peft_model

    from frontier_signal.backend import models
    from frontier_signal.engine.threads import ThreadGovernor

    model = models.load_hf_model(MODEL, dtype=torch.float32)
    model.train()
    model = get_peft_model(
        model, LoraConfig(r=32, lora_alpha=64, target_modules=list(TARGETS), task_type="CAUSAL_LM")
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    # The baseline gets the engine's thread policy too (engine/threads.py): on a shared machine
    # a 2-thread OpenMP loop next to a busy process runs several times slower than on 1.
    governor = ThreadGovernor()

    def step(input_ids) -> None:
        governor.adjust()
        out = model(input_ids=input_ids, labels=input_ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (+1 warm-up)")
    args = parser.parse_args()

    import torch

    from frontier_signal import SignalClient
    from frontier_signal.backend import models
    from frontier_signal.server.embedded import EmbeddedServer
    from frontier_signal.service.settings import ServiceSettings

    peak = bf16_peak_gflops()
    limit = peak["bfloat16"] * 1e9 / (4 * N_PARAMS)
    tokenizer = models.load_tokenizer(MODEL)
    batch = [{"text": _text_of(tokenizer, args.tokens)} for _ in range(args.batch)]
    ids = tokenizer(batch[0]["text"], add_special_tokens=False)["input_ids"][: args.tokens]
    peft_step = _peft_loop(args.batch, len(ids))
    peft_input = torch.tensor([ids] * args.batch)
    settings = ServiceSettings(
        data_dir=tempfile.mkdtemp(prefix="fs-bench-"), models=[MODEL], no_auth=True
    )
    seconds: dict[str, list[float]] = {"sdk_defaults": [], "sdk_no_checkpointing": [], "peft": []}
    with EmbeddedServer(settings) as server, SignalClient("local", server.base_url) as client:
        server.wait_ready()
        runs = {
            "sdk_defaults": client.create_run(base_model=MODEL, seed=0),
            "sdk_no_checkpointing": client.create_run(
                base_model=MODEL, gradient_checkpointing=False, seed=0
            ),
        }
        effective = {name: run.get_status()["effective"] for name, run in runs.items()}
        for _round in range(args.rounds + 1):
            for name, run in runs.items():
                started = time.perf_counter()
                tokens = run.forward_backward(batch)["tokens"]
                run.optim_step()
                seconds[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            peft_step(peft_input)
            seconds["peft"].append(time.perf_counter() - started)
    step_tokens = args.batch * len(ids)
    rates = {name: step_tokens / min(times[1:]) for name, times in seconds.items()}
    print(
        json.dumps(
            {
                "benchmark": "server_training",
                "model": MODEL,
                "shape": f"{args.batch}x{len(ids)}",
                "trained_tokens_per_step": tokens,
                "matmul_peak_gflops": peak,
                "bf16_training_limit_tokens_per_second": round(limit, 1),
                "load_average": os.getloadavg(),
                "effective": effective,
                "tokens_per_second": {k: round(v, 1) for k, v in rates.items()},
                "percent_of_bf16_limit": {k: round(100 * v / limit, 1) for k, v in rates.items()},
                "ratio_vs_peft_fp32": {
                    k: round(v / rates["peft"], 2) for k, v in rates.items() if k != "peft"
                },
                "seconds_per_round": {k: [round(t, 3) for t in v] for k, v in seconds.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
