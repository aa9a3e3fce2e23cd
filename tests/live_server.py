"""Live servers of the integration tests: the package's embedded server (a thread of the test
process), and `ServerProcess`, a real `frontier-signal serve` process (for restarts, crashes and
several processes on one database)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from frontier_signal.server.embedded import EmbeddedServer as LiveServer

__all__ = ["LiveServer", "ServerProcess"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`frontier-signal serve` on 127.0.0.1 and a free port, on the tiny model in float32; its
    output goes to `<data_dir>/server.log`. `start()` waits for /ready (bounded)."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = dict(os.environ, FRONTIER_SIGNAL_DTYPE="float32") | (env or {})
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        from tests.conftest import TINY

        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "frontier_signal.cli", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--models", TINY, *self.args]
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.data_dir / 'server.log'}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server never became ready")

    def stop(self, timeout: float = 60.0) -> None:
        """A clean stop (SIGTERM), as an operator's."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
