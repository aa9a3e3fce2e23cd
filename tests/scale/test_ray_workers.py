"""Engine workers as Ray actors on one machine (docs/scale-out.md): a real `frontier-signal
serve --ray local --workers 2` process driven by our SDK, the `openai` and the `tinker` clients.

Runs of two tenants spread over both workers and train exactly as the one-process engine does;
then one worker's process is killed mid-training and its run resumes on a live worker from its
last training checkpoint while the client retries and finishes (the tests run in file order)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from frontier_signal import SignalAPIError, SignalClient
from frontier_signal.engine import operations as ops
from frontier_signal.engine.types import SampleRequest, SamplingParams
from frontier_signal.engine.worker import DirectWorker
from frontier_signal.server.schemas.signal import CreateRunBody
from tests.conftest import TINY
from tests.scale.conftest import wait_workers, workers

TEXT = {"text": "The capital of Zorbia is Quellmar, a city of bridges."}
PROMPT = "The capital of Zorbia is"
RUN = {"base_model": TINY, "lora_r": 4, "learning_rate": 0.02, "bf16": False}


class OneProcess:
    """The one-process engine on the same run config: the losses and samples to match."""

    def __init__(self, config: dict):
        self.worker = DirectWorker(device="cpu", dtype="float32")
        spec = CreateRunBody.model_validate(config).to_run_spec("same")
        self.worker.run(ops.CreateRun("same", spec.engine_config()))
        self.max_length = config["max_seq_length"]

    def step(self) -> float:
        op = ops.ForwardBackward("same", TINY, examples=[TEXT], max_length=self.max_length,
                                 reduction="mean", accumulate=False)  # fmt: skip
        loss = self.worker.run(op).loss
        self.worker.run(ops.OptimStep("same", {"learning_rate": None}))
        return loss

    def sample(self, max_tokens: int) -> str:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        request = SampleRequest("same", params=params, prompt_text=PROMPT)
        return self.worker.run(ops.Sample(TINY, [request])).results[0].sequences[0].text


def holder(base_url: str, run_id: str) -> dict:
    return next(w for w in workers(base_url) if run_id in w["runs"])


def test_runs_of_two_tenants_spread_over_two_workers_and_train_as_in_one_process(
    ray_server, alice, bob
):
    url = ray_server.base_url
    openai = pytest.importorskip("openai")
    with SignalClient(alice, url) as a, SignalClient(bob, url) as b:
        runs = [a.create_run(seed=3, **RUN), b.create_run(seed=4, **RUN)]
        runs += [a.create_run(seed=5, **RUN), b.create_run(seed=6, **RUN)]
        listed = wait_workers(url, 2)
        held = [set(w["runs"]) for w in listed]
        assert held[0] and held[1] and held[0] | held[1] == {r.run_id for r in runs}
        assert all(w["pid"] and w["state"] == "ready" and w["base_models"] for w in listed)
        assert {len(h) for h in held} == {2}  # placed by room: two runs each
        for run in runs[:2]:  # one run of each tenant, each on its own worker
            same = OneProcess(run.get_status()["config"])
            losses = []
            for _ in range(3):
                losses.append(run.forward_backward([TEXT])["loss"])
                run.optim_step()
            assert losses == pytest.approx([same.step() for _ in range(3)], rel=1e-4)
            assert losses[-1] < losses[0]
            sampled = run.sample([PROMPT], max_tokens=6, temperature=0.0)["outputs"][0]
            assert sampled == same.sample(6)
        assert holder(url, runs[0].run_id)["id"] != holder(url, runs[1].run_id)["id"]
    with openai.OpenAI(base_url=f"{url}/v1", api_key=bob, max_retries=3) as client:
        run_id = runs[1].run_id
        chat = [{"role": "user", "content": "Where is Quellmar?"}]
        whole = client.chat.completions.create(
            model=run_id, messages=chat, max_tokens=8, temperature=0.0
        )
        streamed = client.chat.completions.create(
            model=run_id, messages=chat, max_tokens=8, temperature=0.0, stream=True
        )
        pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
        assert "".join(pieces) == whole.choices[0].message.content and len(pieces) > 1


def test_the_tinker_sdk_trains_and_samples_through_the_workers(ray_server, alice, monkeypatch):
    tinker = pytest.importorskip("tinker")
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    from frontier_signal.backend import models

    tokens = models.load_tokenizer(TINY)(TEXT["text"], add_special_tokens=False)["input_ids"]
    datum = tinker.types.Datum(
        model_input=tinker.types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )
    key = "tml-" + alice.removeprefix("sk-fs-")
    with tinker.ServiceClient(base_url=ray_server.base_url, api_key=key) as service:
        training = service.create_lora_training_client(base_model=TINY, rank=4)
        losses = []
        for _ in range(3):
            forward_backward = training.forward_backward([datum], "cross_entropy")
            optim = training.optim_step(tinker.types.AdamParams(learning_rate=5e-3))
            losses.append(forward_backward.result().metrics["loss:sum"])
            optim.result()
        assert losses[-1] < losses[0]
        sampler = training.save_weights_and_get_sampling_client("ray-tinker")
        params = tinker.types.SamplingParams(max_tokens=4, temperature=0.0)
        prompt = tinker.types.ModelInput.from_ints(tokens[:5])
        answer = sampler.sample(prompt, num_samples=1, sampling_params=params).result()
        assert len(answer.sequences[0].tokens) == 4
        assert training.model_id in {r for w in workers(ray_server.base_url) for r in w["runs"]}


def test_a_stream_left_early_stops_its_generation_on_the_worker(ray_server, alice):
    openai = pytest.importorskip("openai")
    url = ray_server.base_url
    before = httpx.get(f"{url}/ready", timeout=10).json()["scheduler"]["cancelled_generations"]
    with openai.OpenAI(base_url=f"{url}/v1", api_key=alice, max_retries=0) as client:
        stream = client.completions.create(
            model=TINY, prompt=PROMPT, max_tokens=4000, temperature=1.0, stream=True
        )
        next(iter(stream))  # the first tokens came back through the Ray stream; then leave
        stream.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the Ray task is cancelled, so the generation stops
        counts = httpx.get(f"{url}/ready", timeout=10).json()["scheduler"]
        if counts["cancelled_generations"] > before and counts["generating"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the generation went on after its caller left: {counts}")


def test_a_killed_worker_s_runs_resume_from_their_checkpoint_and_clients_finish(
    ray_server, alice, bob
):
    url = ray_server.base_url
    openai = pytest.importorskip("openai")
    with SignalClient(alice, url) as client:
        run = client.create_run(seed=7, **RUN)
        same = OneProcess(run.get_status()["config"])
        expected = [same.step() for _ in range(8)]
        losses = {}
        for step in range(3):  # steps 1-3; the training checkpoint of step 2 is written
            losses[step] = run.forward_backward([TEXT])["loss"]
            run.optim_step()
        victim = holder(url, run.run_id)
        others = [r for r in victim["runs"] if r != run.run_id]

        def kill_soon() -> None:
            time.sleep(0.05)
            os.kill(victim["pid"], signal.SIGKILL)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        while run.get_status()["step"] < 8:  # a client that redoes a gradient the crash lost
            step = run.get_status()["step"]
            losses[step] = run.forward_backward([TEXT])["loss"]
            try:
                run.optim_step()
            except SignalAPIError as exc:
                assert exc.status_code == 400 and "forward_backward first" in str(exc)
        killer.join()
        # It resumed from step 2 (its newest checkpoint): the trajectory goes on from there.
        assert [losses[s] for s in range(8)] == pytest.approx(expected, rel=1e-4)
        assert [m["step"] for m in run.get_metrics()] == list(range(1, 9))
        now = holder(url, run.run_id)
        assert now["pid"] != victim["pid"] and now["state"] == "ready"
    with openai.OpenAI(base_url=f"{url}/v1", api_key=bob, max_retries=5) as oai:
        for run_id in others:  # the other runs it held answer again (restored where there is room)
            completion = oai.completions.create(model=run_id, prompt=PROMPT, max_tokens=3)
            assert completion.choices[0].text is not None
    listed = wait_workers(url, 2)  # Ray restarted the killed actor: it takes new runs again
    assert victim["pid"] not in {w["pid"] for w in listed}
    assert httpx.get(f"{url}/ready", timeout=10).status_code == 200
