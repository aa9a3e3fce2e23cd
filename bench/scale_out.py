"""Scale-out on Ray (docs/scale-out.md): the cost of the Ray hop, and N runs on 1 vs 2 workers.

1. `hop`: forward_backward of 1×`--tokens` through a Ray engine worker (`WorkerPool`, one actor
   with one torch thread) vs an `InProcessWorker` in this process (one torch thread), same run
   config (rank-32 attention+MLP LoRA, mean loss, accumulate=False), the two alternating call by
   call so drift hits both alike. Median seconds per call and the ratio (target ≤ 1.10).
2. `runs`: N = 1, 2, 4, 8 runs, each doing `--steps` steps (forward_backward 1×`--tokens` +
   optim_step) all at once, on a pool of 1 worker and on a pool of 2 workers (two actors of one
   CPU each, the runs placed by the pool): aggregate trained tokens per second.

One local Ray instance (`ray.init`, 2 CPUs unless the machine has more) serves both parts; the
figures are ratios within one run. Prints JSON.

    .venv/bin/python bench/scale_out.py [--model M] [--tokens 128] [--repeats 12] [--steps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
OPTIONS = {"engine_options": {"device": "cpu", "dtype": "float32"}}


def _datum(model: str, tokens: int):
    from frontier_signal.backend import models
    from frontier_signal.engine.types import Datum

    words = ("the quick brown fox jumps over a lazy dog while seven wizards box " * 200).split()
    ids = models.load_tokenizer(model)(" ".join(words), add_special_tokens=False)["input_ids"]
    ids = ids[: tokens + 1]
    return Datum(ids[:-1], ids[1:])


def _config(model: str):
    from frontier_signal.engine.types import LoraSpec, OptimizerSpec, RunConfig

    return RunConfig(model, LoraSpec(rank=32, alpha=32, seed=1), OptimizerSpec(), 2048)


async def _fb(worker, run_id: str, model: str, datum) -> float:
    from frontier_signal.engine import operations as ops

    op = ops.ForwardBackward(run_id, model, datums=[datum], reduction="mean", accumulate=False)
    started = time.perf_counter()
    await worker.submit(op, key=run_id)
    return time.perf_counter() - started


async def hop(pool, model: str, datum, repeats: int) -> dict:
    import torch

    from frontier_signal.engine import operations as ops
    from frontier_signal.engine.worker import InProcessWorker

    torch.set_num_threads(1)
    local = InProcessWorker(**OPTIONS)
    local.start()
    for worker in (local, pool):
        await worker.submit(ops.CreateRun("hop", _config(model)), key="hop")
        await _fb(worker, "hop", model, datum)  # warm
    times: dict[str, list[float]] = {"in_process": [], "ray": []}
    for _ in range(repeats):
        times["in_process"].append(await _fb(local, "hop", model, datum))
        times["ray"].append(await _fb(pool, "hop", model, datum))
    await pool.submit(ops.DeleteRun("hop"), key="hop")
    await asyncio.to_thread(local.stop)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "in_process_s": round(medians["in_process"], 4),
        "ray_s": round(medians["ray"], 4),
        "ratio": round(medians["ray"] / medians["in_process"], 3),
    }


async def runs_at_once(pool, model: str, datum, count: int, steps: int) -> dict:
    from frontier_signal.engine import operations as ops

    names = [f"run-{pool.size}-{count}-{i}" for i in range(count)]
    for name in names:
        await pool.submit(ops.CreateRun(name, _config(model)), key=name)

    async def train(name: str) -> None:
        for _ in range(steps):
            await _fb(pool, name, model, datum)
            await pool.submit(ops.OptimStep(name), key=name)

    await asyncio.gather(*(_fb(pool, name, model, datum) for name in names))  # warm
    started = time.perf_counter()
    await asyncio.gather(*(train(name) for name in names))
    seconds = time.perf_counter() - started
    placed = {w["id"]: len(w["runs"]) for w in pool.workers()}
    for name in names:
        await pool.submit(ops.DeleteRun(name), key=name)
    tokens = count * steps * len(datum.input_tokens)
    return {"seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds), "placed": placed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--runs", default="1,2,4,8")
    args = parser.parse_args()

    from frontier_signal.engine import operations as ops
    from frontier_signal.engine.pool import WorkerPool

    datum = _datum(args.model, args.tokens)
    one = WorkerPool("local", 1, OPTIONS, cpus=1)
    one.start()
    two = WorkerPool("local", 2, OPTIONS, cpus=1)  # worker 0 is the same actor as `one`'s
    two.start()
    for pool in (one, two):
        await pool.submit(ops.LoadModel(args.model))
        while len(pool.ready_slots()) < pool.size:
            await asyncio.sleep(0.1)
    answer: dict = {"model": args.model, "tokens": args.tokens, "cpus": os.cpu_count()}
    answer["hop"] = await hop(one, args.model, datum, args.repeats)
    print(json.dumps(answer["hop"]), file=sys.stderr)
    answer["runs"] = {}
    for count in map(int, args.runs.split(",")):
        for pool in (one, two):
            key = f"{count}_runs_{pool.size}_workers"
            answer["runs"][key] = await runs_at_once(pool, args.model, datum, count, args.steps)
            print(key, json.dumps(answer["runs"][key]), file=sys.stderr)
    print(json.dumps(answer, indent=2))
    two.stop()
    one.stop()


if __name__ == "__main__":
    asyncio.run(main())
