"""Typed engine operations: every operation and result pickles; the executor runs each kind on
the tiny model; the in-process worker answers them through the scheduler thread."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
from dataclasses import replace

import pytest

from frontier_signal.engine import executor
from frontier_signal.engine import operations as ops
from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import (
    Datum,
    ForwardBackwardResult,
    OptimStepResult,
    SampledSequence,
    SampleRequest,
    SampleResult,
    SamplingParams,
)
from tests.conftest import TINY, make_config

CONFIG = make_config()
SAVED = ops.SavedCheckpoint("run_a", "/tmp/x", "sampler", 3, 0.5, 1024)
DATUM = Datum([1, 2, 3], [2, 3, 4], [1.0, 1.0, 1.0])
SAMPLE_RESULT = SampleResult([SampledSequence([5, 6], "hi", [-0.1, -0.2], "stop", [[(5, -0.1)]])])

# One instance of every operation and every result type.
INSTANCES = [
    ops.LoadModel(TINY),
    ops.ModelInfo(TINY),
    ops.ModelDescription(TINY, 2048, 32000, 2),
    ops.PrepareSampling("run_a", "/tmp/ckpt"),
    ops.Prepared("run_a", "/tmp/ckpt"),
    ops.EstimateRunBytes(CONFIG),
    ops.RunBytes(123),
    ops.CreateRun("run_a", CONFIG, "/tmp/steps/step-{step}"),
    ops.RunCreated("run_a", "float32", 0, SAVED),
    ops.RestoreRun("run_a", CONFIG, "/tmp/ckpt"),
    ops.RunRestored("run_a", 4),
    ops.DeleteRun("run_a"),
    ops.RunDeleted("run_a"),
    ops.ForwardBackward("run_a", TINY, [DATUM], [{"text": "x"}], 64, "ppo", {"clip": 0.2}),
    ops.Forward("run_a", TINY, [DATUM]),
    ForwardBackwardResult("run_a", [[-1.0]], [[1.0]], 1.0, 1.0, 1.0, 1, 0, 0.5, 0.1, 0, 8),
    ops.OptimStep("run_a", {"learning_rate": 0.1}, "/s/{step}", "/t/{step}", 2),
    ops.OptimStepDone(OptimStepResult("run_a", 1, 0.1, 0.5, False), 0.01, SAVED, None),
    ops.Sample(TINY, [SampleRequest(TINY, [1, 2], SamplingParams(logit_bias=((1, 2.0),)))]),
    ops.Sampled([SAMPLE_RESULT]),
    ops.Embed("run_a", ["hello"], ""),
    ops.Embedded([[0.1, 0.2]]),
    ops.SaveCheckpoint("run_a", "/tmp/ckpt", "training"),
    SAVED,
    ops.LoadCheckpoint("run_a", "/tmp/ckpt", False, "/s/{step}", "/t"),
    ops.CheckpointLoaded("run_a", 2, CONFIG, SAVED, SAVED),
    ops.Export("run_a", "/tmp/out", "gguf", "q8_0"),
    ops.Exported("run_a", 2, {"model.gguf": 10}),
    ops.WorkerInfo([TINY], [TINY], {TINY: 2048}, ["run_a"], 10, ["k"], {"adapters": {}}),
]


def test_every_operation_and_result_round_trips_through_pickle():
    operation_types = set(ops.Operation.__args__)  # type: ignore[attr-defined]
    covered = {type(instance) for instance in INSTANCES}
    assert operation_types <= covered, operation_types - covered
    result_types = {
        obj
        for obj in vars(ops).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == ops.__name__
    }
    assert result_types <= covered, result_types - covered
    for instance in INSTANCES:
        assert pickle.loads(pickle.dumps(instance)) == instance


def test_operations_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ops.DeleteRun("run_a").run_id = "run_b"  # type: ignore[misc]


def test_the_executor_runs_each_operation_kind_on_the_tiny_model(engine, tmp_path):
    run_id = "run_ops_exec"
    described = executor.execute(engine, ops.LoadModel(TINY))
    assert described.context_length > 0 and described.vocab_size > 0
    assert executor.execute(engine, ops.ModelInfo(TINY)) == described
    assert executor.execute(engine, ops.EstimateRunBytes(CONFIG)).bytes > 0
    created = executor.execute(
        engine, ops.CreateRun(run_id, CONFIG, str(tmp_path / "steps" / "step-{step}"))
    )
    try:
        assert created.step == 0 and created.sampler.folder.endswith("step-000000")
        result = executor.execute(
            engine, ops.ForwardBackward(run_id, TINY, examples=[{"text": "a b c"}], max_length=64)
        )
        assert isinstance(result, ForwardBackwardResult) and result.num_tokens > 0
        forward = executor.execute(engine, ops.Forward(run_id, TINY, [DATUM]))
        assert len(forward.logprobs[0]) == 3
        with pytest.raises(InvalidInputError, match="max_seq_length"):
            executor.execute(
                engine,
                ops.ForwardBackward(run_id, TINY, examples=[{"text": "x " * 80}], max_length=8),
            )
        stepped = executor.execute(
            engine,
            ops.OptimStep(
                run_id, {}, str(tmp_path / "s-{step}"), str(tmp_path / "t-{step}"), training_every=1
            ),
        )
        assert stepped.result.step == 1 and stepped.training.kind == "training"
        assert stepped.sampler.size_bytes > 0
        params = SamplingParams(max_tokens=3, seed=1, ignore_eos=True)
        request = SampleRequest(run_id, [1, 2, 3], params)
        sampled = executor.execute(engine, ops.Sample(TINY, [request]))
        assert len(sampled.results[0].sequences[0].tokens) == 3
        vectors = executor.execute(engine, ops.Embed(run_id, ["hello", "world"])).vectors
        assert len(vectors) == 2
        assert executor.execute(engine, ops.PrepareSampling(run_id)) == ops.Prepared(run_id, "")
        saved = executor.execute(engine, ops.SaveCheckpoint(run_id, str(tmp_path / "c")))
        assert saved.step == 1
        loaded = executor.execute(
            engine, ops.LoadCheckpoint(run_id, saved.folder, True, str(tmp_path / "l-{step}"))
        )
        assert loaded.step == 1 and loaded.sampler.folder.endswith("l-000001")
        exported = executor.execute(engine, ops.Export(run_id, str(tmp_path / "m")))
        assert exported.step == 1 and (tmp_path / "m").is_dir()
        info = executor.describe(engine)
        assert run_id in info.runs and info.context_lengths[TINY] == described.context_length
        assert info.memory_bytes > 0
    finally:
        executor.execute(engine, ops.DeleteRun(run_id))
    restored = executor.execute(engine, ops.RestoreRun(run_id, CONFIG, saved.folder))
    assert restored.step == 1
    executor.execute(engine, ops.DeleteRun(run_id))
    with pytest.raises(TypeError, match="not an engine operation"):
        executor.execute(engine, object())


def test_sampling_fits_the_context_and_stops_at_eos_unless_ignored(engine):
    context = executor.execute(engine, ops.LoadModel(TINY)).context_length
    eos = engine.tokenizer(TINY).eos_token_id
    request = SampleRequest(TINY, [1, 2], SamplingParams(max_tokens=0, stop_token_ids=(7,)))
    fitted = executor.prepare(engine, ops.Sample(TINY, [request], True, 5))[0]
    assert fitted.params.max_tokens == 5 and fitted.params.stop_token_ids == (7, eos)
    exact = replace(request, params=replace(request.params, ignore_eos=True))
    kept = executor.prepare(engine, ops.Sample(TINY, [exact]))[0]
    assert kept.params.stop_token_ids == (7,)
    too_long = SampleRequest(TINY, [1] * context, SamplingParams(max_tokens=1))
    with pytest.raises(InvalidInputError, match="context"):
        executor.prepare(engine, ops.Sample(TINY, [too_long], fit_context=True))


def test_the_in_process_worker_answers_typed_results_and_publishes_its_info(engine):
    from frontier_signal.engine.worker import EngineWorker, InProcessWorker

    worker = InProcessWorker(engine, scheduler_options={"sample_gather_s": 0})
    assert isinstance(worker, EngineWorker)
    worker.start()
    try:

        async def scenario():
            created = await worker.submit(ops.CreateRun("run_ops_worker", CONFIG), key="w")
            params = SamplingParams(max_tokens=2, ignore_eos=True)
            request = SampleRequest("run_ops_worker", [1, 2], params)
            tokens: list[int] = []
            sampled = await worker.submit(
                ops.Sample(TINY, [request]),
                key="w",
                on_token=lambda i, s, token, lp: tokens.append(token),
            )
            assert "run_ops_worker" in worker.info().runs  # published before the answer
            await worker.submit(ops.DeleteRun("run_ops_worker"), key="w")
            return created, sampled, tokens

        created, sampled, tokens = asyncio.run(scenario())
        assert created.run_id == "run_ops_worker"
        assert sampled.results[0].sequences[0].tokens == tokens
        assert "run_ops_worker" not in worker.info().runs
        assert set(worker.counts()) >= {"pending", "generating", "cancelled_generations"}
    finally:
        worker.stop()
