"""The Signal REST API (docs/signal-api.md): thin handlers over `RunService`.

Handlers whose work is only store reads are plain `def` (FastAPI runs them in its threadpool);
`async` ones send their store calls to a worker thread (docs/server.md, "Store")."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from frontier_signal.engine.types import SamplingParams
from frontier_signal.engine.validation import logit_bias_from_wire
from frontier_signal.server.auth import tenant_id
from frontier_signal.server.disconnect import unless_disconnected
from frontier_signal.server.openapi import (
    EVENT_STREAM,
    GZIP,
    SIGNAL_ERRORS,
    EventStreamResponse,
)
from frontier_signal.server.schemas import signal_responses as wire
from frontier_signal.server.schemas.signal import (
    CreateRunBody,
    EmbeddingsBody,
    ForwardBackwardBody,
    OptimStepBody,
    SampleBody,
    SaveStateBody,
    base_model_entry,
    checkpoint_info,
    forward_backward_result,
    metric_row,
    optim_step_result,
    run_status,
    saved_state,
)
from frontier_signal.server.streaming import GenerationStream, sse
from frontier_signal.service import files
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.streaming import settled

router = APIRouter(prefix="/v1", tags=["signal"], responses=SIGNAL_ERRORS)
Tenant = Annotated[str, Depends(tenant_id)]


def _state(request: Request):
    return request.app.state.frontier


async def _logged(request: Request, tenant: str, run_id: str | None, kind: str, body, operation):
    """Record the call and apply it once per `Idempotency-Key`."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 200:
        raise InvalidRequest("Idempotency-Key must be 1 to 200 characters")
    payload = body.model_dump() if body is not None else None
    return await _state(request).requests.run(
        request.state.request_id, tenant, run_id, kind, [run_id, payload], key, operation
    )


@router.get("/base-models", response_model=wire.BaseModelList)
async def list_base_models(request: Request, tenant: Tenant) -> dict:
    return {"data": [base_model_entry(entry) for entry in _state(request).runs.list_models()]}


@router.post("/runs", response_model=wire.RunStatus)
async def create_run(request: Request, tenant: Tenant, body: CreateRunBody) -> dict:
    async def operation():
        return run_status(await _state(request).runs.create_run(body.to_run_spec(tenant)))

    return await _logged(request, tenant, None, "create_run", body, operation)


@router.get("/runs", response_model=wire.RunList)
def list_runs(request: Request, tenant: Tenant) -> dict:
    return {"data": [run_status(row) for row in _state(request).store.list_runs(tenant)]}


@router.get("/runs/{run_id}", response_model=wire.RunStatus)
def get_run(request: Request, tenant: Tenant, run_id: str) -> dict:
    return run_status(_state(request).runs.run_row(tenant, run_id))


@router.delete("/runs/{run_id}", response_model=wire.DeletedRun)
async def delete_run(request: Request, tenant: Tenant, run_id: str) -> dict:
    await _state(request).runs.delete_run(tenant, run_id)
    return {"run_id": run_id, "deleted": True}


@router.post("/runs/{run_id}/forward_backward", response_model=wire.ForwardBackwardResult)
async def forward_backward(
    request: Request, tenant: Tenant, run_id: str, body: ForwardBackwardBody
) -> dict:
    service = _state(request).runs
    await asyncio.to_thread(service.run_row, tenant, run_id)

    async def operation():
        result = await service.forward_backward(tenant, run_id, body.batch, body.accumulate)
        return forward_backward_result(result)

    return await _logged(request, tenant, run_id, "forward_backward", body, operation)


@router.post("/runs/{run_id}/optim_step", response_model=wire.OptimStepResult)
async def optim_step(request: Request, tenant: Tenant, run_id: str, body: OptimStepBody) -> dict:
    service = _state(request).runs
    await asyncio.to_thread(service.run_row, tenant, run_id)

    async def operation():
        return optim_step_result(await service.optim_step(tenant, run_id, body.learning_rate))

    return await _logged(request, tenant, run_id, "optim_step", body, operation)


def _params(body: SampleBody) -> SamplingParams:
    return SamplingParams(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop_strings=tuple(body.stop or ()),
        seed=body.seed,
        min_p=body.min_p,
        logit_bias=logit_bias_from_wire(body.logit_bias),
    )


def _check_prompts(prompts: list[str]) -> None:
    if not prompts:
        raise InvalidRequest("prompts is empty: send at least one prompt")
    for index, prompt in enumerate(prompts):
        if not prompt:
            raise InvalidRequest(f"prompts[{index}] is empty: send text to continue")


@router.post("/runs/{run_id}/sample", response_model=wire.SampleResult)
async def sample(request: Request, tenant: Tenant, run_id: str, body: SampleBody) -> dict:
    prompts = body.prompt_list()
    _check_prompts(prompts)
    state = _state(request)
    with state.requests.counted(tenant):
        results, step = await unless_disconnected(
            request,
            state.runs.sample_requests(tenant, run_id, prompts, _params(body), body.step),
        )
    sequences = [result.sequences[0] for result in results]
    return {
        "outputs": [s.text for s in sequences],
        "logprobs": [s.logprobs for s in sequences] if body.return_logprobs else None,
        "finish_reasons": [s.stop_reason for s in sequences],
        "step": step,
    }


@router.post(
    "/runs/{run_id}/sample/stream", response_class=EventStreamResponse, responses=EVENT_STREAM
)
async def sample_stream(request: Request, tenant: Tenant, run_id: str, body: SampleBody):
    prompts = body.prompt_list()
    _check_prompts(prompts)
    if len(prompts) != 1:
        raise InvalidRequest(f"streaming takes exactly one prompt, got {len(prompts)}")
    app = _state(request)
    row = await asyncio.to_thread(app.runs.run_row, tenant, run_id)
    if body.step is not None:  # a step not kept is a 404 before streaming
        await asyncio.to_thread(app.runs.sampler_path, run_id, body.step)
    tokenizer = app.runs.tokenizer(row.base_model)
    params = _params(body)

    def generate(on_token):
        return app.runs.sample_requests(tenant, run_id, prompts, params, body.step, on_token)

    stream = GenerationStream(app, tenant, tokenizer, params, 1, generate)
    prompt_tokens = len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"])
    return stream.response(_events(params, prompt_tokens), sse, _error_event, "data: [DONE]\n\n")


def _events(params: SamplingParams, prompt_tokens: int):
    """Signal's stream: one event per token (its settled text, id and logprob), then the rest
    of the text with the finish reason and usage."""

    async def events(tokens, final):
        sent = ""
        async for _row, token, logprob, text in tokens():
            # Text a stop string may still claim is held back (the output cuts it).
            visible = settled(text, params.stop_strings)
            delta = ""
            if visible.startswith(sent):
                delta, sent = visible[len(sent) :], visible
            yield {"text": delta, "token_id": token, "logprob": logprob}
        results, _ = await final()
        sequence = results[0].sequences[0]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(sequence.tokens)}
        rest = sequence.text[len(sent) :] if sequence.text.startswith(sent) else ""
        yield {"text": rest, "finish_reason": sequence.stop_reason, "usage": usage}

    return events


def _error_event(status: int, type_: str, message: str) -> str:
    return sse({"error": {"message": message, "type": type_, "status": status}})


@router.post("/runs/{run_id}/embeddings", response_model=wire.Embeddings)
async def embeddings(request: Request, tenant: Tenant, run_id: str, body: EmbeddingsBody) -> dict:
    _check_prompts(body.texts)
    state = _state(request)
    with state.requests.counted(tenant):
        vectors, step = await unless_disconnected(
            request, state.runs.embeddings(tenant, run_id, body.texts, body.step)
        )
    return {"embeddings": vectors, "dim": len(vectors[0]), "step": step}


@router.post("/runs/{run_id}/save_state", response_model=wire.SavedState)
async def save_state(request: Request, tenant: Tenant, run_id: str, body: SaveStateBody) -> dict:
    service = _state(request).runs
    await asyncio.to_thread(service.run_row, tenant, run_id)

    async def operation():
        saved = await service.save_state(
            tenant, run_id, body.mode, body.push_to_hub, body.hub_model_id
        )
        return saved_state(saved)

    return await _logged(request, tenant, run_id, "save_state", body, operation)


@router.get("/runs/{run_id}/metrics", response_model=wire.MetricList)
def metrics(request: Request, tenant: Tenant, run_id: str) -> dict:
    state = _state(request)
    state.runs.run_row(tenant, run_id)
    return {"data": [metric_row(row) for row in state.store.list_metrics(run_id)]}


@router.get("/runs/{run_id}/checkpoints", response_model=wire.CheckpointList)
def checkpoints(request: Request, tenant: Tenant, run_id: str) -> dict:
    state = _state(request)
    state.runs.run_row(tenant, run_id)
    rows = [c for c in state.store.list_checkpoints(run_id) if c.kind != "sampler"]
    return {"data": [checkpoint_info(row) for row in rows]}


@router.get(
    "/runs/{run_id}/checkpoints/{checkpoint_id}/archive",
    response_class=FileResponse,
    responses=GZIP,
)
async def checkpoint_archive(request: Request, tenant: Tenant, run_id: str, checkpoint_id: str):
    checkpoint = await asyncio.to_thread(
        _state(request).runs.checkpoint, tenant, run_id, checkpoint_id
    )
    path = await asyncio.to_thread(files.archive, Path(checkpoint.path), checkpoint_id)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"{run_id}-{checkpoint_id}.tar.gz",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


@router.get("/runs/{run_id}/steps", response_model=wire.KeptSteps)
def steps(request: Request, tenant: Tenant, run_id: str) -> dict:
    return {"steps": _state(request).runs.kept_steps(tenant, run_id)}
