"""Restarts and crashes keep runs, checkpoints and metrics; a run continues where it was saved."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.conftest import TINY
from tests.integration.conftest import make_key, server_settings
from tests.live_server import LiveServer

TEXT = {"text": "The capital of Zorbia is Quellmar, a city of bridges."}


def train(http: httpx.Client, run_id: str, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        result = http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT]})
        losses.append(result.json()["loss"])
        assert http.post(f"/v1/runs/{run_id}/optim_step", json={}).status_code == 200
    return losses


def connect(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_a_clean_restart_keeps_runs_checkpoints_and_metrics_and_training_continues(tmp_path):
    key = make_key(tmp_path, "alice")
    config = {"base_model": TINY, "lora_r": 4, "seed": 5, "learning_rate": 0.02}
    live = LiveServer(server_settings(tmp_path, checkpoint_every=0)).start()
    with connect(live.base_url, key) as http:
        straight = http.post("/v1/runs", json=config).json()["run_id"]
        resumed = http.post("/v1/runs", json=config).json()["run_id"]
        expected = train(http, straight, 4)
        assert train(http, resumed, 3) == expected[:3]
        saved = http.post(f"/v1/runs/{resumed}/save_state", json={}).json()
    live.stop()  # clean shutdown: writes a training checkpoint of every run that moved

    live = LiveServer(server_settings(tmp_path)).start()
    try:
        with connect(live.base_url, key) as http:
            status = http.get(f"/v1/runs/{resumed}").json()
            assert status["step"] == 3
            assert [m["step"] for m in http.get(f"/v1/runs/{resumed}/metrics").json()["data"]] == [
                1,
                2,
                3,
            ]
            listed = http.get(f"/v1/runs/{resumed}/checkpoints").json()["data"]
            assert saved["checkpoint_id"] in [c["checkpoint_id"] for c in listed]
            # The restored optimizer state makes step 4 the uninterrupted run's step 4.
            (fourth,) = train(http, resumed, 1)
            assert abs(fourth - expected[3]) <= 1e-5 * abs(expected[3])
            assert http.get(f"/v1/runs/{resumed}").json()["step"] == 4
    finally:
        live.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(tmp_path, port: int) -> subprocess.Popen:
    env = dict(os.environ, FRONTIER_SIGNAL_DTYPE="float32", FRONTIER_SIGNAL_CHECKPOINT_EVERY="2")
    command = [sys.executable, "-m", "frontier_signal.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(tmp_path), "--models", TINY]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(base_url: str, process: subprocess.Popen) -> None:
    for _ in range(600):  # bounded: 60 s
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{base_url}/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server never became ready")


def test_after_a_crash_a_run_resumes_from_its_last_checkpoint_and_nothing_is_corrupt(tmp_path):
    key = make_key(tmp_path, "alice")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = _serve(tmp_path, port)
    try:
        _wait_ready(base_url, process)
        with connect(base_url, key) as http:
            run_id = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4}).json()["run_id"]
            train(http, run_id, 3)  # checkpoint_every=2: a training checkpoint at step 2
            http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT]})
    finally:
        process.send_signal(signal.SIGKILL)  # no shutdown checkpoint, a pending gradient lost
        process.wait(30)

    process = _serve(tmp_path, port)
    try:
        _wait_ready(base_url, process)
        with connect(base_url, key) as http:
            # The run comes back at step 2 (its last checkpoint), its history cut there.
            assert http.get(f"/v1/runs/{run_id}").json()["step"] == 2
            assert http.get(f"/v1/runs/{run_id}/steps").json()["steps"] == [0, 1, 2]
            train(http, run_id, 1)
            assert http.get(f"/v1/runs/{run_id}").json()["step"] == 3
            steps = [m["step"] for m in http.get(f"/v1/runs/{run_id}/metrics").json()["data"]]
            assert steps == [1, 2, 3]
            kept = http.get(f"/v1/runs/{run_id}/steps").json()["steps"]
            assert kept == [0, 1, 2, 3]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
