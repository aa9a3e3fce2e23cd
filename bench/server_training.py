"""Training through the server with the SDK's defaults vs a plain HF PEFT fp32 loop, same tokens.

Each side runs as a user would run it, in its own process: a real `frontier-signal serve` (uvicorn,
SQLite, the scheduler thread) driven by `SignalClient` from this process, and the loop a user would
write by hand (fp32 SmolLM2-135M-Instruct, `get_peft_model` r=32 on attention + MLP,
`loss.backward()`, `AdamW.step()`, on the CPUs other processes leave free, as the engine does) in
a child process that steps when told. Rounds alternate between them so drift hits all alike; the
figure per side is its best round (a shared machine).

Why separate processes: libgomp spins at its barriers only while the process has no more OpenMP
threads than CPUs. Two threads that each ran 2-thread torch work (a PEFT loop on the main thread
and the engine's scheduler thread) make two thread teams in one process, and then every team
sleeps between parallel regions: on this 2-core machine that cost the engine 25-40 % and the PEFT
loop about 15 %. A real server's only OpenMP team is its scheduler thread's.

Server runs: `create_run(base_model=...)` with the SDK's defaults (r=32, alpha=64, every attention
and MLP linear, adamw_8bit, bf16 where the CPU has it, gradient_checkpointing=True, honoured),
and the same with `gradient_checkpointing=False`. A step is `forward_backward` of `--batch`
`{"text"}` examples of `--tokens` tokens, then `optim_step`. The machine's bf16 matmul peak is
measured first (in a child process) and each figure is also given as % of the bf16 training limit
(4·N FLOPs/token).

    .venv/bin/python bench/server_training.py [--batch 4] [--tokens 128] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from api_overhead import MODEL  # noqa: E402
from serving import start_server  # noqa: E402  (bench/serving.py: serve on the real model)
from train_throughput import TARGETS, measure  # noqa: E402

N_PARAMS = 134_515_008


def peft_child(batch: int) -> None:
    """The PEFT loop, one step per line of stdin (the token ids as JSON); prints its seconds."""
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
    print("ready", flush=True)
    for line in sys.stdin:
        input_ids = torch.tensor(json.loads(line))
        started = time.perf_counter()
        governor.adjust()
        out = model(input_ids=input_ids, labels=input_ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(time.perf_counter() - started, flush=True)


def _distinct_text(tokenizer, tokens: int, seed: int) -> str:
    """`tokens` tokens of shuffled words, a different order per seed (no common prefix)."""
    import random

    words = ("the quick brown fox jumps over a lazy dog while seven wizards box " * 40).split()
    random.Random(seed).shuffle(words)
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


class Child:
    """A process of this script in a given role, talked to by lines."""

    def __init__(self, *args: str):
        command = [sys.executable, __file__, *args]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def ask(self, line: str) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (+1 warm-up)")
    parser.add_argument("--peft-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peft_child:
        peft_child(args.batch)
        return

    from frontier_signal import SignalClient
    from frontier_signal.backend import models

    models.model_folder(models.resolve_model(MODEL))  # convert the GGUF once, outside timing
    peak = measure("peak")
    limit = peak["bfloat16"] * 1e9 / (4 * N_PARAMS)
    tokenizer = models.load_tokenizer(MODEL)
    # Different texts per example: identical ones would share their whole prefix (the engine
    # computes a common prefix once, backend/prefix_sharing.py) and flatter the figure.
    texts = [_distinct_text(tokenizer, args.tokens, seed) for seed in range(args.batch)]
    batch = [{"text": text} for text in texts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][: args.tokens] for t in texts]
    peft = Child("--peft-child", "--batch", str(args.batch))
    data_dir = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    server, url = start_server(data_dir)
    seconds: dict[str, list[float]] = {"sdk_defaults": [], "sdk_no_checkpointing": [], "peft": []}
    try:
        with SignalClient("local", url) as client:
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
                seconds["peft"].append(peft.ask(json.dumps(ids)))  # the same tokens
    finally:
        peft.close()
        server.terminate()
        server.wait(60)
    step_tokens = sum(len(row) for row in ids)
    rates = {name: step_tokens / min(times[1:]) for name, times in seconds.items()}
    print(
        json.dumps(
            {
                "benchmark": "server_training",
                "model": MODEL,
                "shape": f"{args.batch}x{len(ids[0])}",
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
