"""Many runs training at once through the real worker path, against the same steps one after
another: `train_throughput.py --many N` runs this in a fresh process.

N runs (SmolLM2-135M-Instruct, r=32 attention + MLP) each send `forward_backward` (1×`length`
tokens) then `optim_step`, as N concurrent clients of one `InProcessWorker` (its scheduler
thread batches the forward/backwards of different runs into one mixed batch and their
optimizer steps into one multi-tensor update). Three variants alternate in one process, round
after round (the first round warms up), so only their ratios matter on a loaded machine:

- `mixed`: concurrent clients, the scheduler as shipped;
- `mixed_step_per_run`: concurrent clients, but each run's optimizer step applied on its own
  (`Engine.optim_step_batch` replaced by a loop over `optim_step`): what batching the steps buys;
- `one_after_another`: one client at a time (forward_backward, optim_step, next run).

    .venv/bin/python bench/many_runs.py --runs 16 [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class _Batches:
    """Scheduler observer: the sizes of the batches it ran, per kind."""

    def __init__(self):
        self.sizes: dict[str, list[int]] = {}

    def batch_started(self, kind, submitted, started) -> None:
        self.sizes.setdefault(kind, []).append(len(submitted))

    def batch_done(self, kind, outcomes, seconds) -> None:
        pass

    def first_token(self, *args) -> None:
        pass


def _step_per_run(engine, steps):
    """`optim_step_batch` as one `optim_step` per run (the A/B baseline)."""
    from frontier_signal.engine.errors import EngineError

    outcomes = []
    for run_id, overrides in steps:
        try:
            outcomes.append(engine.optim_step(run_id, **overrides))
        except EngineError as exc:
            outcomes.append(exc)
    return outcomes


def run_many(runs: int, length: int, rounds: int, dtype: str, optimizer: str = "adamw") -> dict:
    import torch

    from frontier_signal.engine import operations as ops
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.types import Datum, LoraSpec, OptimizerSpec, RunConfig
    from frontier_signal.engine.worker import InProcessWorker

    engine = Engine(dtype=dtype)
    config = RunConfig(
        MODEL,
        LoraSpec(rank=32, alpha=64, target_modules=TARGETS),
        OptimizerSpec(kind=optimizer, learning_rate=1e-4),
    )
    ids = [engine.create_run(config).run_id for _ in range(runs)]
    worker = InProcessWorker(engine)
    observer = _Batches()
    worker.observe(observer)
    worker.start()
    generator = torch.Generator().manual_seed(0)

    async def client(run_id: str, datum: Datum) -> None:
        await worker.submit(ops.ForwardBackward(run_id, MODEL, [datum]), key=run_id)
        await worker.submit(ops.OptimStep(run_id), key=run_id)

    async def one_round(datums, variant: str) -> float:
        batched = Engine.optim_step_batch
        if variant == "mixed_step_per_run":
            engine.optim_step_batch = lambda steps: _step_per_run(engine, steps)
        start = time.perf_counter()
        try:
            if variant == "one_after_another":
                for run_id, datum in zip(ids, datums, strict=True):
                    await client(run_id, datum)
            else:
                await asyncio.gather(*(client(r, d) for r, d in zip(ids, datums, strict=True)))
        finally:
            engine.optim_step_batch = batched.__get__(engine)
        return time.perf_counter() - start

    variants = ("mixed", "mixed_step_per_run", "one_after_another")
    seconds: dict[str, list[float]] = {v: [] for v in variants}

    async def main() -> None:
        for index in range(rounds + 1):
            tokens = torch.randint(0, 49152, (runs, length + 1), generator=generator)
            datums = [Datum(row[:-1].tolist(), row[1:].tolist()) for row in tokens]
            order = variants if index % 2 == 0 else variants[::-1]
            for variant in order:
                took = await one_round(datums, variant)
                if index:  # the first round warms up
                    seconds[variant].append(took)

    try:
        asyncio.run(main())
    finally:
        worker.stop()
    total = runs * length
    rate = {v: total * len(s) / sum(s) for v, s in seconds.items()}
    return {
        "runs": runs,
        "optimizer": optimizer,
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
        "tokens_per_second": rate,
        "seconds_per_round": seconds,
        "mixed_vs_one_after_another": rate["mixed"] / rate["one_after_another"],
        "mixed_vs_mixed_step_per_run": rate["mixed"] / rate["mixed_step_per_run"],
        "batch_sizes": {kind: sorted(set(sizes)) for kind, sizes in observer.sizes.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (+1 warm-up)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = run_many(args.runs, args.length, args.rounds, args.dtype, args.optimizer)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
