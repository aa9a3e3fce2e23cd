"""Without Ray: the one-process default imports no ray, `/ready` lists its one engine worker,
and an engine worker lost under an operation is a retryable 503 (`Retry-After`,
`x-should-retry: true`) on every face, which our SDK, `openai`, `anthropic` and `tinker` clients
retry to success (a worker that fails the next N operations stands in for a dead Ray actor)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import httpx
import pytest

from frontier_signal import SignalClient
from frontier_signal.engine import operations as ops
from frontier_signal.engine.errors import RunNotHeld, WorkerLost
from frontier_signal.engine.types import SampleRequest
from frontier_signal.engine.worker import InProcessWorker
from frontier_signal.server.app import worker_options
from frontier_signal.service.errors import describe
from tests.conftest import TINY
from tests.integration.conftest import server_settings
from tests.integration.sdk_fixtures import wait_ready
from tests.live_server import LiveServer


class LosingWorker(InProcessWorker):
    """An in-process worker whose next `lose` training or sampling operations fail as if its
    process had died."""

    lose = 0

    async def submit(self, op, *, key="", owner="", on_token=None):
        if self.lose and isinstance(op, ops.ForwardBackward | ops.Sample):
            self.lose -= 1
            raise WorkerLost("engine worker 0 stopped while running this operation; retry it")
        return await super().submit(op, key=key, owner=owner, on_token=on_token)


@pytest.fixture(scope="module")
def losing(data_dir):
    settings = server_settings(data_dir)
    worker = LosingWorker(**worker_options(settings))
    live = LiveServer(settings, worker).start()
    wait_ready(live.base_url)
    yield live, worker
    live.stop()


def test_the_one_process_server_imports_no_ray():
    modules = "frontier_signal.server.app, frontier_signal.cli"
    code = f"import sys, {modules}; print('ray' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert shown.stdout.strip() == "False", shown.stderr


def test_several_workers_without_ray_are_refused_with_the_fix(tmp_path):
    from frontier_signal.server.app import create_app

    with pytest.raises(ValueError, match="needs --ray"):
        create_app(server_settings(tmp_path, workers=2))


def test_routing_reads_the_run_an_operation_needs_held():
    request = SampleRequest("run_a", prompt_text="hi")
    assert ops.held_run(ops.ForwardBackward("run_a", TINY), "") == "run_a"
    assert ops.held_run(ops.CreateRun("run_a", None), "run_a") == ""  # type: ignore[arg-type]
    assert ops.held_run(ops.Sample(TINY, [request]), "run_a") == "run_a"
    on_disk = SampleRequest("run_a", prompt_text="hi", checkpoint="/ckpt")
    assert ops.held_run(ops.Sample(TINY, [on_disk]), "run_a") == ""  # any worker can load it
    assert ops.held_run(ops.Embed(TINY, ["x"]), "") == ""
    assert pickle.loads(pickle.dumps(RunNotHeld("run_a"))).run_id == "run_a"


def test_a_lost_worker_is_a_retryable_503_with_its_headers():
    for error in (WorkerLost("gone"), RunNotHeld("run_a")):
        status, _, _, headers = describe(error)
        assert status == 503
        assert headers == {"Retry-After": "1", "x-should-retry": "true"}


def test_ready_lists_the_one_in_process_worker(losing, alice):
    live, _ = losing
    with SignalClient(alice, live.base_url) as client:
        run = client.create_run(base_model=TINY, lora_r=4)
        listed = httpx.get(f"{live.base_url}/ready").json()["workers"]
        assert len(listed) == 1
        (worker,) = listed
        assert worker["pid"] == os.getpid() and worker["state"] == "ready"
        assert run.run_id in worker["runs"] and TINY in worker["base_models"]
        assert worker["memory_bytes"] > 0 and worker["id"] == "worker-0"


def test_every_face_answers_503_with_retry_headers(losing, alice):
    live, worker = losing
    headers = {"Authorization": f"Bearer {alice}", "x-api-key": alice}
    chat = {"model": TINY, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=live.base_url, headers=headers, timeout=60) as http:
        for path in ("/v1/chat/completions", "/v1/messages"):
            worker.lose = 1
            answer = http.post(path, json=chat)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "1"
            assert answer.headers["x-should-retry"] == "true"


def test_the_clients_retry_a_lost_worker_and_succeed(losing, alice, monkeypatch):
    live, worker = losing
    openai = pytest.importorskip("openai")
    anthropic = pytest.importorskip("anthropic")
    chat = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=alice, max_retries=2) as oai:
        worker.lose = 1
        answer = oai.chat.completions.create(model=TINY, messages=chat, max_tokens=2)
        assert answer.choices[0].message is not None and worker.lose == 0
    claude = anthropic.Anthropic(base_url=live.base_url, api_key=alice, max_retries=2)
    worker.lose = 1
    assert claude.messages.create(model=TINY, messages=chat, max_tokens=2).content is not None
    with SignalClient(alice, live.base_url) as client:
        run = client.create_run(base_model=TINY, lora_r=4)
        worker.lose = 1
        assert run.forward_backward([{"text": "Zorbia is far."}])["loss"] > 0
    tinker = pytest.importorskip("tinker")
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    datum = tinker.types.Datum(
        model_input=tinker.types.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
    )
    key = "tml-" + alice[len("sk-fs-") :]
    with tinker.ServiceClient(base_url=live.base_url, api_key=key) as service:
        training = service.create_lora_training_client(base_model=TINY, rank=4)
        worker.lose = 1  # the server runs a future again after a lost worker
        assert training.forward_backward([datum], "cross_entropy").result().metrics["loss:sum"] > 0
        assert worker.lose == 0
