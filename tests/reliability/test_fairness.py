"""A long generation does not hold the engine: it decodes in slices, and other tenants' short
requests (a 2-token sample, a training step) run between them and finish long before it."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import TINY
from tests.reliability.admission_support import make_key, scheduler_counts, start, wait_until

LONG_TOKENS = 1000  # ~20-40 s on the tiny model on a loaded 2-core machine


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fairness-data")
    server = start(data_dir)
    keys = {name: make_key(data_dir, name) for name in ("alice", "bob")}
    yield server, keys
    server.stop()


def _client(server, key: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=300)


def _complete(http: httpx.Client, max_tokens: int) -> dict:
    body = {
        "model": TINY,
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    answer = http.post("/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_short_requests_of_another_tenant_finish_long_before_a_long_generation(live):
    server, keys = live
    with _client(server, keys["alice"]) as alice, _client(server, keys["bob"]) as bob:
        run = bob.post("/v1/runs", json={"base_model": TINY, "lora_r": 4}).json()["run_id"]
        datum = {"text": "a short training example"}
        finished: dict[str, float] = {}

        def long_generation() -> None:
            answer = _complete(alice, LONG_TOKENS)
            assert answer["usage"]["completion_tokens"] == LONG_TOKENS
            finished["long"] = time.monotonic()

        started = time.monotonic()
        thread = threading.Thread(target=long_generation)
        thread.start()
        wait_until(lambda: scheduler_counts(server.base_url)["generating"] >= 1, "the long one")
        asked = time.monotonic()
        short = _complete(bob, 2)
        finished["short"] = time.monotonic()
        trained = bob.post(f"/v1/runs/{run}/forward_backward", json={"batch": [datum]})
        finished["train"] = time.monotonic()
        thread.join(300)
    assert short["usage"]["completion_tokens"] == 2 and trained.status_code == 200, trained.text
    assert "long" in finished, "the long generation did not finish"
    assert finished["short"] < finished["train"] < finished["long"]
    # bob waited at most a few slices, not for alice's 1,000 tokens.
    long_took = finished["long"] - started
    assert finished["train"] - asked < 0.25 * long_took, (finished, started, asked)


def test_a_short_sample_batched_with_a_long_one_is_answered_first():
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.scheduler import Scheduler
    from frontier_signal.engine.types import SampleRequest, SamplingParams

    scheduler = Scheduler(Engine(device="cpu", dtype="float32"), slice_tokens=8)
    scheduler.start()
    try:
        gate = threading.Event()
        blocker = scheduler.call("", lambda engine: (engine.load_model(TINY), gate.wait(60)))

        def sample(tokens: int):
            params = SamplingParams(max_tokens=tokens, temperature=0)
            request = SampleRequest(TINY, [1, 2, 3], params)
            return scheduler.sample("", TINY, lambda engine: [request])

        long, short = sample(200), sample(2)
        gate.set()
        blocker.result(60)
        [result] = short.result(120)
        assert len(result.sequences[0].tokens) == 2
        assert not long.done()  # one batch, but the short one did not wait for the long one
        assert len(long.result(300)[0].sequences[0].tokens) == 200
    finally:
        scheduler.stop()


def test_training_is_not_starved_by_samples_arriving_during_a_long_generation():
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.scheduler import Scheduler
    from frontier_signal.engine.types import ForwardBackwardRequest, SampleRequest, SamplingParams
    from tests.conftest import make_config

    engine = Engine(device="cpu", dtype="float32")
    engine.create_run(make_config(), "a")
    scheduler = Scheduler(engine, slice_tokens=2, sample_gather_s=0)
    scheduler.start()

    def sample(tokens: int):
        request = SampleRequest(TINY, [1, 2, 3], SamplingParams(max_tokens=tokens, temperature=0))
        return scheduler.sample("", TINY, lambda engine: [request])

    def train(engine: Engine) -> ForwardBackwardRequest:
        datum = engine.render(TINY, [{"text": "hello there friend"}], 64)[0].datum
        return ForwardBackwardRequest("a", [datum], reduction="mean")

    try:
        long = sample(60)
        stop = threading.Event()

        def keep_sampling() -> None:  # one short sample after another, for as long as it runs
            while not stop.is_set() and not long.done():
                sample(1).result(120)

        sampler = threading.Thread(target=keep_sampling)
        sampler.start()
        trained = scheduler.forward_backward("a", TINY, train)
        trained.result(300)
        assert not long.done()  # the training step did not wait for the long generation
        stop.set()
        sampler.join(300)
        long.result(300)
    finally:
        scheduler.stop()
