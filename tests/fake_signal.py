"""An in-memory stand-in for the Signal REST API, for SDK unit tests over `httpx.MockTransport`.

It answers the endpoints of `docs/signal-api.md` with made-up but consistent numbers, records
every request, and can be told to fail the next requests to a path (to test retries). It is
not the server: the real-server integration tests drive `frontier_signal.server`.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Any

import httpx

MODELS = ["frontier-signal/tiny-llama", "HuggingFaceTB/SmolLM2-135M-Instruct"]


class ChunkStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body delivered in exactly these chunks (sync and async)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self):
        yield from self.chunks

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk


def error(status: int, message: str, request_id: str = "req_test", **headers: str):
    body = {"error": {"message": message, "type": "test_error", "code": None, "param": None}}
    return httpx.Response(status, json=body, headers={"x-request-id": request_id, **headers})


class FakeSignal:
    """Routes requests like the server; `requests` is the log, `fail_next` scripts failures."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.failures: dict[str, deque[Any]] = defaultdict(deque)
        self.runs: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.samples = 0
        self.stream_chunks: list[bytes] | None = None

    def fail_next(self, path: str, *outcomes: Any) -> None:
        """Answer the next requests to `path` with these responses or raise these exceptions."""
        self.failures[path].extend(outcomes)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def posts(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if self.failures[path]:
            outcome = self.failures[path].popleft()
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        body = json.loads(request.content) if request.content else None
        parts = path.strip("/").split("/")
        if path == "/v1/base-models":
            return ok({"data": [{"id": m, "loaded": True} for m in MODELS]})
        if path == "/v1/runs" and request.method == "POST":
            return self.create_run(body)
        if path == "/v1/runs":
            return ok({"data": list(self.runs.values())})
        run_id = parts[2]
        if run_id not in self.runs:
            return error(404, f"run {run_id!r} not found")
        action = "/".join(parts[3:])
        handler = getattr(self, "do_" + (action.replace("/", "_") or "status"))
        return handler(self.runs[run_id], body)

    def create_run(self, config: dict[str, Any]) -> httpx.Response:
        if config["base_model"] not in MODELS:
            return error(404, f"unknown base model {config['base_model']!r}; have {MODELS}")
        run_id = f"run_{len(self.runs):04x}"
        self.runs[run_id] = {
            "run_id": run_id,
            "base_model": config["base_model"],
            "status": "active",
            "step": 0,
            "config": config,
        }
        return ok(self.runs[run_id])

    def do_status(self, run, body):
        return ok(run)

    def do_forward_backward(self, run, body):
        loss = 2.0 / (run["step"] + 1)
        tokens = 10 * len(body["batch"])
        return ok({"loss": loss, "step": run["step"] + 1, "grad_norm": 0.5, "tokens": tokens})

    def do_optim_step(self, run, body):
        run["step"] += 1
        lr = body["learning_rate"] or run["config"]["learning_rate"]
        row = {"step": run["step"], "loss": 2.0 / run["step"], "grad_norm": 0.5}
        self.metrics[run["run_id"]].append({**row, "learning_rate": lr, "tokens": 10})
        return ok({"step": run["step"], "learning_rate": lr, "grad_norm": 0.5, "metrics": {}})

    def do_sample(self, run, body):
        outputs = []
        for prompt in body["prompts"]:
            self.samples += 1
            outputs.append(f"{prompt} -> #{self.samples}")
        n = len(outputs)
        return ok({"outputs": outputs, "logprobs": None, "finish_reasons": ["length"] * n})

    def do_sample_stream(self, run, body):
        chunks = self.stream_chunks or [
            b'data: {"text": "Hi", "token_id": 1, "logprob": -0.5}\n\n',
            b'data: {"finish_reason": "length", "usage": {"prompt_tokens": 2, '
            b'"completion_tokens": 1}}\n\ndata: [DONE]\n\n',
        ]
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=ChunkStream(chunks))

    def do_embeddings(self, run, body):
        vectors = [[float(len(text)), 1.0] for text in body["texts"]]
        return ok({"embeddings": vectors, "dim": 2, "step": run["step"]})

    def do_save_state(self, run, body):
        path = f"/data/{run['run_id']}/ckpt_0001"
        return ok(
            {
                "checkpoint_id": "ckpt_0001",
                "checkpoint_path": path,
                "artifact_uri": f"file://{path}",
                "mode": body["mode"],
                "step": run["step"],
                "pushed_to_hub": False,
                "hub_model_id": None,
            }
        )

    def do_metrics(self, run, body):
        return ok({"data": self.metrics[run["run_id"]]})


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"x-request-id": "req_ok"})
