"""Faults leave nothing behind and replay nothing false (issue 18, item 5).

A real server process is killed with SIGKILL mid-run, then started again on the same data:
- an idempotent retry of a step the crash rolled back runs again (it used to answer the undone
  step from the stored result while the run stood at an earlier step);
- retries of work the restored state holds still replay;
- half-written `.*.tmp-*` folders, unrecorded checkpoint folders and folders of no run are
  gone; automatic checkpoints are pruned to the newest `keep_auto_checkpoints`, a caller's
  save_state never.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import TINY
from tests.integration.conftest import make_key
from tests.integration.test_durability import _wait_ready
from tests.reliability.support import connect

TEXT = {"text": "The capital of Zorbia is Quellmar, a city of bridges."}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(data_dir: Path, port: int) -> subprocess.Popen:
    env = dict(
        os.environ,
        FRONTIER_SIGNAL_DTYPE="float32",
        FRONTIER_SIGNAL_CHECKPOINT_EVERY="2",
        FRONTIER_SIGNAL_KEEP_AUTO_CHECKPOINTS="2",
    )
    command = [sys.executable, "-m", "frontier_signal.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--models", TINY]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _step(http: httpx.Client, run_id: str, key: str) -> dict:
    headers = {"Idempotency-Key": f"fb-{key}"}
    fb = http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT]}, headers=headers)
    assert fb.status_code == 200, fb.text
    headers = {"Idempotency-Key": f"step-{key}"}
    answer = http.post(f"/v1/runs/{run_id}/optim_step", json={}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_after_sigkill_undone_results_are_not_replayed_and_nothing_stray_is_left(tmp_path):
    key = make_key(tmp_path, "alice")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = _serve(tmp_path, port)
    try:
        _wait_ready(base_url, process)
        with connect(base_url, key) as http:
            run_id = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4}).json()["run_id"]
            assert _step(http, run_id, "1")["step"] == 1
            user_saved = http.post(f"/v1/runs/{run_id}/save_state", json={}).json()
            for n in range(2, 8):  # automatic checkpoints at 2, 4, 6; step 7 is after the last
                assert _step(http, run_id, str(n))["step"] == n
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    run_folder = tmp_path / "runs" / run_id
    half_written = run_folder / "checkpoints" / ".ckpt_x.tmp-abc123"
    unrecorded = run_folder / "checkpoints" / "ckpt_never_recorded"
    ghost_run = tmp_path / "runs" / "run_ghost"
    for folder in (half_written, unrecorded, ghost_run / "steps" / "step-000000"):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"partial")

    process = _serve(tmp_path, port)
    try:
        _wait_ready(base_url, process)
        with connect(base_url, key) as http:
            assert http.get(f"/v1/runs/{run_id}").json()["step"] == 6  # the last checkpoint
            # Step 7 was undone: its retry runs again (a fresh step 7 the run really took) ...
            redone = _step(http, run_id, "7")
            assert redone["step"] == 7
            assert http.get(f"/v1/runs/{run_id}").json()["step"] == 7
            assert redone["metrics"]["loss"] is not None  # its gradient was computed again
            # ... while step 5, which the restored state holds, still replays as it was.
            replay = http.post(
                f"/v1/runs/{run_id}/optim_step", json={}, headers={"Idempotency-Key": "step-5"}
            )
            assert replay.status_code == 200 and replay.json()["step"] == 5
            assert http.get(f"/v1/runs/{run_id}").json()["step"] == 7

            names = [c["name"] for c in http.get(f"/v1/runs/{run_id}/checkpoints").json()["data"]]
            assert names.count("adapter-step-1") == 1  # the caller's save is never pruned
            automatic = [n for n in names if n.startswith("auto-step-")]
            assert automatic == ["auto-step-4", "auto-step-6"], names
            kept = {
                c["checkpoint_id"]
                for c in http.get(f"/v1/runs/{run_id}/checkpoints").json()["data"]
            }
            assert user_saved["checkpoint_id"] in kept
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert not half_written.exists() and not unrecorded.exists() and not ghost_run.exists()
    on_disk = sorted(p.name for p in (run_folder / "checkpoints").iterdir())
    assert not [name for name in on_disk if name.startswith(".")]
    # The caller's save and the newest two automatic ones (auto-step-6, shutdown-step-7).
    assert len(on_disk) == 3, on_disk
