"""Training throughput and peak memory: the engine vs a plain HF PEFT + AdamW loop.

Both train SmolLM2-135M-Instruct with rank-32 LoRA on attention + MLP, on the same random
token batches, each shape in a fresh subprocess so peak RSS is per configuration. The PEFT
loop is what a user would write by hand: fp32 model, `get_peft_model`, `model(input_ids,
labels=...)`, `loss.backward()`, `AdamW.step()`. Prints one JSON object with both figures
and the ratios; also the memory one extra run costs in the engine.

    .venv/bin/python bench/train_throughput.py [--steps 3] [--shapes 1x128,8x256] [--many 4,16]

It also measures the machine's bf16/fp32 matmul peak first (the % of the bf16 training limit,
4·N FLOPs a token, is printed for every shape), N runs × 1×128 in one mixed batch against the
same steps one after another (bench/many_runs.py: concurrent clients of the worker, and the
optimizer steps batched vs one per run), and the memory one more run costs with adamw and
adamw_8bit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _batches(batch: int, length: int, steps: int, vocab: int = 49152):
    import torch

    generator = torch.Generator().manual_seed(0)
    return [
        torch.randint(0, vocab, (batch, length + 1), generator=generator) for _ in range(steps + 1)
    ]


def run_peft(batch: int, length: int, steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from frontier_signal.backend import models

    model = models.load_hf_model(MODEL, dtype=torch.float32)
    model.train()
    model = get_peft_model(
        model,
        LoraConfig(
            r=32, lora_alpha=64, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"
        ),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, losses = [], []
    for index, tokens in enumerate(_batches(batch, length, steps)):
        start = time.perf_counter()
        out = model(input_ids=tokens[:, :-1], labels=tokens[:, :-1])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
        losses.append(float(out.loss))
    return {"seconds_per_step": sum(times) / len(times), "first_loss": losses[0]}


def run_extra_runs(dtype: str, extra_runs: int, optimizer: str = "adamw") -> dict:
    """RSS one more run in use costs: measured in a fresh process on tiny batches, so the
    allocator has no freed activation memory to hide the new tensors in."""
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.types import Datum, LoraSpec, OptimizerSpec, RunConfig

    engine = Engine(dtype=dtype)
    config = RunConfig(
        MODEL,
        LoraSpec(rank=32, alpha=64, target_modules=tuple(TARGETS)),
        OptimizerSpec(kind=optimizer, learning_rate=1e-4),  # type: ignore[arg-type]
    )
    small = [Datum(list(range(1, 17)), list(range(2, 18)))]

    def add_run() -> str:
        run_id = engine.create_run(config).run_id
        engine.forward_backward(run_id, small)  # gradient + optimizer state exist, as in use
        engine.optim_step(run_id)
        return run_id

    add_run()
    before = _rss_mib()
    ids = [add_run() for _ in range(extra_runs)]
    grown = (_rss_mib() - before) / extra_runs
    for run_id in ids:
        engine.delete_run(run_id)
    import gc

    gc.collect()
    return {
        "optimizer": optimizer,
        "extra_runs": extra_runs,
        "rss_per_extra_run_mib": grown,
        "accounted_per_run_mib": engine.get_run(engine.list_runs()[0]).memory_bytes / 2**20,
        "adapter_params": engine.get_run(engine.list_runs()[0]).num_params,
        "rss_after_deleting_them_mib": _rss_mib() - before,
    }


def run_engine(batch: int, length: int, steps: int, dtype: str) -> dict:
    from frontier_signal.backend import native
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.types import Datum, LoraSpec, OptimizerSpec, RunConfig

    engine = Engine(dtype=dtype)
    native.ops()  # our C++ ops (bf16 training attention), loaded before timing
    config = RunConfig(
        MODEL,
        LoraSpec(rank=32, alpha=64, target_modules=tuple(TARGETS)),
        OptimizerSpec(learning_rate=1e-4, beta2=0.999, eps=1e-8),
    )
    run = engine.create_run(config).run_id
    times, losses = [], []
    for index, tokens in enumerate(_batches(batch, length, steps)):
        datums = [Datum(row[:-1].tolist(), row[1:].tolist()) for row in tokens]
        start = time.perf_counter()
        result = engine.forward_backward(run, datums, reduction="mean")
        engine.optim_step(run)
        if index:
            times.append(time.perf_counter() - start)
        losses.append(result.loss)
    return {
        "seconds_per_step": sum(times) / len(times),
        "first_loss": losses[0],
        "dtype": engine.get_run(run).dtype,
    }


def run_many(runs: int, length: int, steps: int, dtype: str, threads: int) -> dict:
    """`runs` runs × 1×`length` through the worker, concurrent vs one after another
    (bench/many_runs.py, in a fresh process)."""
    command = [sys.executable, os.path.join(os.path.dirname(__file__), "many_runs.py")]
    command += ["--runs", str(runs), "--length", str(length), "--rounds", str(steps)]
    command += ["--dtype", dtype, "--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def bf16_peak_gflops(size: int = 2048, repeats: int = 5) -> dict:
    """The machine's matmul peak now (bf16 and fp32), to read every training figure against."""
    import torch

    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds = (time.perf_counter() - start) / repeats
        out[str(dtype).removeprefix("torch.")] = 2 * size**3 / seconds / 1e9
    return out


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    if args.impl == "extra":
        print(json.dumps(run_extra_runs(args.dtype, args.extra_runs, args.optimizer)))
        return
    if args.impl == "peak":
        print(json.dumps(bf16_peak_gflops()))
        return
    if args.impl == "peft":
        result = run_peft(args.batch, args.length, args.steps)
    else:
        result = run_engine(args.batch, args.length, args.steps, args.dtype)
    result["peak_rss_mib"] = _peak_rss_mib()
    result["tokens_per_second"] = args.batch * args.length / result["seconds_per_step"]
    print(json.dumps(result))


def measure(
    impl: str,
    batch: int = 1,
    length: int = 1,
    steps: int = 1,
    dtype: str = "auto",
    extra_runs: int = 0,
    optimizer: str = "adamw",
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        impl,
        "--batch",
        str(batch),
        "--length",
        str(length),
        "--steps",
        str(steps),
        "--dtype",
        dtype,
        "--extra-runs",
        str(extra_runs),
        "--optimizer",
        optimizer,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape (+1 warmup)")
    parser.add_argument("--shapes", default="1x128,4x128,8x256")
    parser.add_argument("--dtype", default="auto", help="engine compute dtype")
    parser.add_argument("--child", choices=["peft", "engine", "extra", "peak"])
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument(
        "--many", default="4,16", help="mixed-batch mode: run counts, each run 1x128 (empty: skip)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in --many (0: torch's default)"
    )
    parser.add_argument("--batch", type=int)
    parser.add_argument("--length", type=int)
    parser.add_argument("--extra-runs", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        args.impl = args.child
        child(args)
        return

    from frontier_signal.backend import models

    models.model_folder(models.resolve_model(MODEL))  # convert the GGUF once, outside timing
    peak = measure("peak")
    # A LoRA step on a frozen base costs about 4·N FLOPs a token (forward 2N, backward through
    # the activations 2N; the adapter's own weight gradients are small).
    n_params = 134_515_008
    limit = peak["bfloat16"] * 1e9 / (4 * n_params)
    report: dict = {
        "model": MODEL,
        "lora": "r=32 attention+MLP",
        "steps": args.steps,
        "cpu_threads": os.cpu_count(),
        "matmul_peak_gflops": peak,
        "bf16_training_limit_tokens_per_second": limit,
        "shapes": {},
    }
    for shape in filter(None, args.shapes.split(",")):
        batch, length = (int(x) for x in shape.split("x"))
        peft = measure("peft", batch, length, args.steps)
        engine = measure("engine", batch, length, args.steps, args.dtype)
        engine["percent_of_bf16_limit"] = 100 * engine["tokens_per_second"] / limit
        report["shapes"][shape] = {
            "peft_fp32": peft,
            "engine": engine,
            "tokens_per_second_ratio": engine["tokens_per_second"] / peft["tokens_per_second"],
            "peak_rss_ratio": engine["peak_rss_mib"] / peft["peak_rss_mib"],
        }
        print(json.dumps({shape: report["shapes"][shape]}), file=sys.stderr)
    report["many_runs"] = [
        run_many(int(n), 128, args.steps, args.dtype, args.threads)
        for n in filter(None, args.many.split(","))
    ]
    report["memory_per_extra_run"] = {
        kind: measure("extra", dtype=args.dtype, extra_runs=4, optimizer=kind)
        for kind in ("adamw", "adamw_8bit")
    }
    shapes = report["shapes"]
    report["targets"] = {
        "tokens_per_second_ratio_4x128 (>= 2)": shapes.get("4x128", {}).get(
            "tokens_per_second_ratio"
        ),
        "percent_of_bf16_limit_8x256 (>= 60)": shapes.get("8x256", {})
        .get("engine", {})
        .get("percent_of_bf16_limit"),
        "peak_rss_ratio_8x256 (<= 0.5)": shapes.get("8x256", {}).get("peak_rss_ratio"),
        "mixed_vs_one_after_another_16_runs (>= 1.5)": next(
            (m["mixed_vs_one_after_another"] for m in report["many_runs"] if m["runs"] == 16),
            None,
        ),
        "rss_per_extra_run_mib_adamw_8bit (<= 60)": report["memory_per_extra_run"]["adamw_8bit"][
            "rss_per_extra_run_mib"
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
