"""Load: many tenants at once against a real server on the tiny model, with and without one
long generation.

A real `frontier-signal serve` process (the tiny model, fp32, CPU, API keys on) gets, for
`--seconds` per phase:
- `--trainers` tenants, each on its own run, looping forward_backward + optim_step;
- `--samplers` tenants looping short completions (`--short-tokens` tokens);
- phase "loaded" only: one more tenant looping long completions (`--long-tokens`, `ignore_eos`).

It prints one JSON object: p50/p99 latency (ms) and count per operation and phase, errors, the
server's RSS before and after, and for each operation of the other tenants the ratio of its p99
under the long generation to its p99 unloaded (same run, same machine). The scheduler slices
long generations (`decode_slice_tokens`), so that ratio stays small; before slicing, every
short request waited for the whole long generation.

    .venv/bin/python bench/load.py [--seconds 20] [--trainers 2] [--samplers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import _free_port  # noqa: E402  (bench/serving.py)

TINY = "frontier-signal/tiny-llama"


def start_server(data_dir: Path) -> tuple[psutil.Popen, str, list[str]]:
    """The server in its own process, and `n` API keys made in its store before it starts."""
    from frontier_signal.service.settings import ServiceSettings
    from frontier_signal.service.store import Store

    port = _free_port()
    env = os.environ | {
        "FRONTIER_SIGNAL_LOG_LEVEL": "warning",
        "FRONTIER_SIGNAL_DTYPE": "float32",
        "FRONTIER_SIGNAL_DEVICE": "cpu",
    }
    command = [
        sys.executable, "-m", "frontier_signal.cli", "serve", "--port", str(port),
        "--models", TINY, "--data-dir", str(data_dir),
    ]  # fmt: skip
    store = Store(ServiceSettings(data_dir=data_dir).resolved_database_url())
    keys = [store.create_key(f"tenant-{i}")[0] for i in range(64)]
    store.close()
    with (data_dir / "server.log").open("wb") as sink:
        process = psutil.Popen(command, stdout=sink, stderr=sink, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):  # bounded: 10 minutes
        if process.poll() is not None:
            raise RuntimeError((data_dir / "server.log").read_text()[-2000:])
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url, keys
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise TimeoutError("the server did not become ready")


class Recorder:
    def __init__(self):
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}

    async def timed(self, op: str, call) -> None:
        start = time.perf_counter()
        try:
            answer = await call
            answer.raise_for_status()
        except (httpx.HTTPError, OSError) as exc:
            name = f"{op}: {type(exc).__name__}"
            self.errors[name] = self.errors.get(name, 0) + 1
            await asyncio.sleep(0.2)
            return
        self.latencies.setdefault(op, []).append((time.perf_counter() - start) * 1000)

    def summary(self) -> dict:
        return {op: _stats(values) for op, values in sorted(self.latencies.items())}


def _stats(values: list[float]) -> dict:
    ordered = sorted(values)
    at = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99)]
    return {"count": len(values), "p50_ms": round(at[0]), "p99_ms": round(at[1])}


async def trainer(client: httpx.AsyncClient, run_id: str, rec: Recorder, until: float) -> None:
    batch = [{"text": "The capital of Zorbia is Quellmar."}]
    while time.monotonic() < until:
        await rec.timed(
            "forward_backward",
            client.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": batch}),
        )
        await rec.timed("optim_step", client.post(f"/v1/runs/{run_id}/optim_step", json={}))


async def sampler(client, rec: Recorder, until: float, tokens: int, op: str) -> None:
    body = {"model": TINY, "prompt": "Once upon a time", "max_tokens": tokens, "temperature": 0}
    while time.monotonic() < until:
        await rec.timed(op, client.post("/v1/completions", json=body | {"ignore_eos": True}))


async def phase(url: str, keys: list[str], runs: list[str], args, long: bool) -> dict:
    rec = Recorder()
    until = time.monotonic() + args.seconds
    clients = [
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {k}"}, timeout=600)
        for k in keys
    ]
    tasks = [trainer(clients[i], runs[i], rec, until) for i in range(args.trainers)]
    tasks += [
        sampler(clients[args.trainers + i], rec, until, args.short_tokens, "short_completion")
        for i in range(args.samplers)
    ]
    if long:
        tasks.append(sampler(clients[-1], rec, until, args.long_tokens, "long_completion"))
    await asyncio.gather(*tasks)
    for client in clients:
        await client.aclose()
    return {"latency": rec.summary(), "errors": rec.errors}


async def main_async(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="fs-load-") as tmp:
        process, url, keys = start_server(Path(tmp))
        try:
            server = psutil.Process(process.pid)
            rss_start = server.memory_info().rss
            runs = []
            for key in keys[: args.trainers]:
                headers = {"Authorization": f"Bearer {key}"}
                answer = httpx.post(
                    f"{url}/v1/runs", json={"base_model": TINY, "lora_r": 8}, headers=headers
                )
                answer.raise_for_status()
                runs.append(answer.json()["run_id"])
            await phase(
                url,
                keys[:1],
                runs[:1],
                argparse.Namespace(**vars(args) | {"seconds": 0.1, "trainers": 1, "samplers": 0}),
                long=False,
            )  # warm-up
            tenants = keys[: args.trainers + args.samplers]
            unloaded = await phase(url, tenants + [keys[-1]], runs, args, long=False)
            loaded = await phase(url, tenants + [keys[-1]], runs, args, long=True)
            rss_end = server.memory_info().rss
            ready = httpx.get(f"{url}/ready", timeout=10).json()
        finally:
            process.terminate()
            process.wait(60)
    ratios = {
        op: round(loaded["latency"][op]["p99_ms"] / max(stats["p99_ms"], 1), 2)
        for op, stats in unloaded["latency"].items()
        if op in loaded["latency"]
    }
    return {
        "settings": vars(args),
        "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1)},
        "unloaded": unloaded,
        "with_long_generation": loaded,
        "p99_ratio_loaded_vs_unloaded": ratios,
        "server_rss_mib": {"start": rss_start >> 20, "end": rss_end >> 20},
        "scheduler": ready.get("scheduler"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--trainers", type=int, default=2)
    parser.add_argument("--samplers", type=int, default=4)
    parser.add_argument("--short-tokens", type=int, default=4)
    parser.add_argument("--long-tokens", type=int, default=400)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
