"""A real uvicorn server on 127.0.0.1 in a background thread, for integration tests."""

from __future__ import annotations

import threading
import time

import uvicorn

from frontier_signal.engine.engine import Engine
from frontier_signal.server.app import create_app
from frontier_signal.service.settings import ServiceSettings


class LiveServer:
    """Start with `start()`, stop with `stop()` (a clean shutdown, as on SIGTERM)."""

    def __init__(self, settings: ServiceSettings, engine: Engine | None = None):
        self.settings = settings
        self.app = create_app(settings, engine)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    @property
    def state(self):
        return self.app.state.frontier

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
