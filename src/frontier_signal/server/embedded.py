"""A real uvicorn server in a background thread of this process: for the demo and the tests.

It is the same app as `frontier-signal serve` (same store, engine worker and routes), on 127.0.0.1
and a free port; `stop()` is a clean shutdown, as on SIGTERM.
"""

from __future__ import annotations

import threading
import time

import uvicorn

from frontier_signal.engine.worker import EngineWorker
from frontier_signal.server.app import create_app
from frontier_signal.service.settings import ServiceSettings


class EmbeddedServer:
    """`EmbeddedServer(settings).start()` → `.base_url`; `.stop()` when done (or `with`)."""

    def __init__(self, settings: ServiceSettings, worker: EngineWorker | None = None):
        self.settings = settings
        self.app = create_app(settings, worker)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def base_url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    @property
    def state(self):
        """The app's live state (store, engine worker, services)."""
        return self.app.state.frontier

    def start(self, timeout: float = 60.0) -> EmbeddedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedded server did not start")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Wait until the startup models are loaded (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while not self.state.ready:
            if self.state.startup_error:
                raise RuntimeError(self.state.startup_error)
            if time.monotonic() > deadline:
                raise TimeoutError("the startup models did not load in time")
            time.sleep(0.05)

    def stop(self, timeout: float = 120.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
