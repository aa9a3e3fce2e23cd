"""The scheduler: per-run order, mixed batches across runs, samples first, failures isolated."""

from __future__ import annotations

import threading

import pytest

from frontier_signal.engine.engine import Engine
from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.operations import OptimStep
from frontier_signal.engine.scheduler import Scheduler
from frontier_signal.engine.types import ForwardBackwardRequest, SampleRequest, SamplingParams
from tests.conftest import TINY, make_config


class RecordingEngine(Engine):
    """The real engine, noting which batches it was handed."""

    def __init__(self):
        super().__init__(device="cpu", dtype="float32")
        self.batches: list[tuple[str, list[str]]] = []

    def forward_backward_batch(self, requests):
        self.batches.append(("forward_backward", [r.run_id for r in requests]))
        return super().forward_backward_batch(requests)

    def optim_step_batch(self, steps):
        self.batches.append(("optim_step", [run_id for run_id, _ in steps]))
        return super().optim_step_batch(steps)

    def start_sampling(self, requests, on_token=None):
        self.batches.append(("sample", [r.model for r in requests]))
        return super().start_sampling(requests, on_token)


@pytest.fixture
def scheduler():
    engine = RecordingEngine()
    for run_id in ("a", "b", "c"):
        engine.create_run(make_config(), run_id)
    scheduler = Scheduler(engine)
    scheduler.start()
    yield scheduler
    scheduler.stop()


def fb(scheduler: Scheduler, run_id: str, tokens: list[int] | None = None):
    def prepare(engine: Engine) -> ForwardBackwardRequest:
        datum = engine.render(TINY, [{"text": "hello there friend"}], 64)[0].datum
        if tokens is not None:
            datum.input_tokens = tokens
        return ForwardBackwardRequest(run_id, [datum], reduction="mean")

    return scheduler.forward_backward(run_id, TINY, prepare)


def sample(scheduler: Scheduler, run_id: str):
    params = SamplingParams(max_tokens=2, temperature=0)
    return scheduler.sample(
        run_id, TINY, lambda e: [SampleRequest(run_id, params=params, prompt_text="Hi")]
    )


def test_waiting_work_of_different_runs_is_batched_and_samples_go_first(scheduler):
    gate = threading.Event()
    blocker = scheduler.call("", lambda engine: gate.wait(30))
    futures = [fb(scheduler, "a"), fb(scheduler, "b"), fb(scheduler, "a"), sample(scheduler, "b")]
    optim = scheduler.call("a", lambda engine: engine.optim_step("a"))
    gate.set()
    for future in [blocker, *futures, optim]:
        future.result(60)
    # b's sample waits for b's forward_backward (a run's work keeps its order); nothing waits
    # ahead of a's and b's first forward_backward, which run as one mixed batch.
    assert scheduler.engine.batches == [
        ("forward_backward", ["a", "b"]),
        ("sample", ["b"]),
        ("forward_backward", ["a"]),
    ]
    assert optim.result().step == 1


def test_a_bad_request_in_a_batch_fails_alone(scheduler):
    gate = threading.Event()
    scheduler.call("", lambda engine: gate.wait(30))
    good, bad = fb(scheduler, "a"), fb(scheduler, "b", tokens=[10**9, 1, 2])
    gate.set()
    assert good.result(60).loss > 0
    with pytest.raises(ValueError, match="token"):
        bad.result(60)


def test_optimizer_steps_of_different_runs_run_as_one_update_and_fail_alone(scheduler):
    gate = threading.Event()
    scheduler.call("", lambda engine: gate.wait(30))
    grads = [fb(scheduler, "a"), fb(scheduler, "b")]
    steps = [scheduler.submit(OptimStep(r), key=r) for r in ("a", "b", "c")]
    again = scheduler.submit(OptimStep("a"), key="a")  # a's second step waits for its first
    gate.set()
    for future in grads:
        future.result(60)
    assert [steps[0].result(60).result.step, steps[1].result(60).result.step] == [1, 1]
    with pytest.raises(InvalidInputError, match="forward_backward first"):
        steps[2].result(60)  # c has no gradient: it fails, a's and b's steps applied
    with pytest.raises(InvalidInputError, match="forward_backward first"):
        again.result(60)
    batches = [(kind, sorted(runs)) for kind, runs in scheduler.engine.batches]
    assert batches == [  # (c, never served, heads its batch: the order inside is fairness's)
        ("forward_backward", ["a", "b"]),
        ("optim_step", ["a", "b", "c"]),
        ("optim_step", ["a"]),
    ]


def test_stopping_finishes_the_queued_work_and_then_refuses_more(scheduler):
    futures = [fb(scheduler, "a"), sample(scheduler, "b")]
    scheduler.stop()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(RuntimeError, match="shutting down"):
        sample(scheduler, "a")
