"""Packing and prefix-sharing A/B on the demo's batch: the same training steps with the engine's
row layouts (backend/batching.py: datums' common prefixes computed once under a tree mask, or
short sequences packed end to end) and plainly padded, alternated round by round in one process.

The batch is the demo's: its 8 conversations (frontier_signal/data/demo_facts.jsonl) rendered
with SmolLM2-135M-Instruct's chat template, one run (r=16 attention + MLP as the demo's default,
`adamw_8bit`), each step a forward_backward of all 8 then an optimizer step. With
`--checkpointing` the run asks for gradient checkpointing, as the seed's default does. With
`--long N` the batch also holds one sequence of N tokens (a skewed batch: unpacked, every short
chat is padded to N). With `--group S` the batch is instead an RL group: S completions (32-96
random tokens) of one 256-token prompt, weighted on the completions only. Prints one JSON object;
only the ratio means anything on a loaded machine.

    .venv/bin/python bench/packing.py [--rounds 4] [--threads 1] [--checkpointing] [--long 256]
        [--group 8]
"""

from __future__ import annotations

import argparse
import json
import time

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (+1 warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--long", type=int, default=0, help="add one sequence this long")
    parser.add_argument("--group", type=int, default=0, help="an RL group of this many instead")
    args = parser.parse_args()
    import torch

    from frontier_signal.backend.batching import build_batch
    from frontier_signal.demo import load_demo_dataset
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.types import (
        Datum,
        ForwardBackwardRequest,
        LoraSpec,
        OptimizerSpec,
        RunConfig,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine()
    config = RunConfig(
        MODEL,
        LoraSpec(rank=16, alpha=32, target_modules=TARGETS),
        OptimizerSpec(kind="adamw_8bit", learning_rate=1e-3),
        max_seq_length=512,
        gradient_checkpointing=args.checkpointing,
    )
    run_id = engine.create_run(config).run_id
    datums = [r.datum for r in engine.render(MODEL, load_demo_dataset(), 512)]
    generator = torch.Generator().manual_seed(0)
    if args.long:
        tokens = torch.randint(0, 49152, (args.long + 1,), generator=generator)
        datums.insert(0, Datum(tokens[:-1].tolist(), tokens[1:].tolist()))
    if args.group:
        prompt = torch.randint(0, 49152, (256,), generator=generator).tolist()
        datums = []
        for _ in range(args.group):
            length = int(torch.randint(32, 97, (1,), generator=generator))
            tokens = prompt + torch.randint(0, 49152, (length,), generator=generator).tolist()
            weights = [0.0] * 255 + [1.0] * length
            datums.append(Datum(tokens[:-1], tokens[1:], weights=weights))
    request = ForwardBackwardRequest(run_id, datums, reduction="mean")
    base = engine.load_model(MODEL)
    batches = {pack: build_batch(base, {run_id: run_id}, [request], pack) for pack in (False, True)}
    rows = {pack: list(batch.input_ids.shape) for pack, batch in batches.items()}
    computed = {pack: int(batch.valid_BT.sum()) for pack, batch in batches.items()}
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for index in range(args.rounds + 1):
        for pack in (True, False) if index % 2 else (False, True):
            engine.pack_sequences = pack
            start = time.perf_counter()
            engine.forward_backward_batch([request])
            engine.optim_step(run_id)
            if index:
                seconds[pack].append(time.perf_counter() - start)
    tokens = sum(len(d.input_tokens) for d in datums)
    print(
        json.dumps(
            {
                "sequences": len(datums),
                "tokens": tokens,
                "rows_x_width": {"unpacked": rows[False], "packed": rows[True]},
                "computed_positions": {"unpacked": computed[False], "packed": computed[True]},
                "prefix_shared": batches[True].share_N is not None,
                "long_sequence": args.long,
                "rl_group": args.group,
                "gradient_checkpointing": args.checkpointing,
                "torch_threads": torch.get_num_threads(),
                "seconds_per_step": {
                    "unpacked": sum(seconds[False]) / len(seconds[False]),
                    "packed": sum(seconds[True]) / len(seconds[True]),
                },
                "rounds": {"unpacked": seconds[False], "packed": seconds[True]},
                "packed_speedup": sum(seconds[False]) / sum(seconds[True]),
            }
        )
    )


if __name__ == "__main__":
    main()
