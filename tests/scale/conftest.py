"""Scale-out fixtures (docs/scale-out.md): a real `frontier-signal serve --ray local --workers 2`
process, a Ray head started with `ray start --block` (stopped by its own pid), keys, and the
one-process engine the losses are compared with.

Without Ray these tests skip, unless FRONTIER_SIGNAL_REQUIRE_RAY=1 (CI), where they fail. They
are marked `ray` (`-m "not ray"` leaves them out)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import make_key
from tests.live_server import ServerProcess, free_port

REQUIRE = os.environ.get("FRONTIER_SIGNAL_REQUIRE_RAY") == "1"
# A tiny-model step on a loaded 2-core machine: Ray's start and two actors importing torch take
# tens of seconds there.
START_S = 300.0


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/scale/" in str(item.fspath):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session", autouse=True)
def ray_installed():
    if importlib.util.find_spec("ray") is None:
        reason = "ray is not installed: pip install 'frontier-signal[ray]'"
        if REQUIRE:
            pytest.fail(reason + " (FRONTIER_SIGNAL_REQUIRE_RAY=1)")
        pytest.skip(reason)


def server_env(**extra: str) -> dict[str, str]:
    """The server's (and its Ray workers') environment: this checkout's sources first, one
    torch thread per worker, automatic training checkpoints every 2 steps."""
    source = str(Path(__file__).resolve().parents[2] / "src")
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {
        "PYTHONPATH": path,
        "FRONTIER_SIGNAL_CHECKPOINT_EVERY": "2",
        "FRONTIER_SIGNAL_WORKER_CPUS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        **extra,
    }


def workers(base_url: str) -> list[dict]:
    return httpx.get(f"{base_url}/ready", timeout=10).json()["workers"]


def wait_workers(base_url: str, ready: int, timeout: float = START_S) -> list[dict]:
    """/ready's workers once `ready` of them are ready (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{base_url}/ready", timeout=10)
        if response.status_code == 200:
            listed = response.json()["workers"]
            if sum(w["state"] == "ready" for w in listed) >= ready:
                return listed
        time.sleep(0.2)
    raise AssertionError(f"{ready} workers were never ready: {workers(base_url)}")


@pytest.fixture(scope="module")
def ray_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-server")


@pytest.fixture(scope="module")
def ray_server(ray_data):
    """`frontier-signal serve --ray local --workers 2` (a Ray instance inside the server)."""
    server = ServerProcess(ray_data, "--ray", "local", "--workers", "2", env=server_env())
    server.start(timeout=START_S)
    try:
        wait_workers(server.base_url, 2)
        yield server
    finally:
        server.stop(timeout=120)


@pytest.fixture(scope="module")
def alice(ray_data) -> str:
    return make_key(ray_data, "alice")


@pytest.fixture(scope="module")
def bob(ray_data) -> str:
    return make_key(ray_data, "bob")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on loopback (`ray start --head --block`, 2 CPUs, its own process group); its
    address. Stopped by signalling that process group (the head and what it started)."""
    command = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    port = free_port()
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    env = dict(os.environ) | server_env()
    args = [command, "start", "--head", "--block", f"--port={port}", "--num-cpus=2"]
    args += ["--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"]
    with open(log, "ab") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=out, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while b"Ray runtime started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed; see {log}")
            time.sleep(0.2)
        yield address
    finally:  # the group of the `ray start` we started: it and the Ray processes it ran
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
