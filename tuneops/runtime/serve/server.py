"""Running the app under uvicorn: in the foreground (`tuneops serve`) or in a background thread (tests,
benchmarks) on a free loopback port."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import uvicorn

from .app import create_app
from .loader import LoadedModel
from .state import ServeConfig


def uvicorn_config(app: Any, host: str, port: int, config: ServeConfig) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                          # uvicorn waits this long for in-flight requests on SIGTERM (blue/green drain)
                          timeout_graceful_shutdown=int(config.drain_timeout_s), timeout_keep_alive=30)


def serve_forever(config: ServeConfig, load: Callable[[], LoadedModel], *, host: str, port: int) -> None:
    uvicorn.Server(uvicorn_config(create_app(config, load), host, port, config)).run()


class BackgroundServer:
    """`with BackgroundServer(config, load) as s: s.url` — a real uvicorn server on 127.0.0.1:<free port>."""

    def __init__(self, config: ServeConfig, load: Callable[[], LoadedModel], *, wait_ready: bool = True,
                 ready_timeout: float = 300.0) -> None:
        self.app = create_app(config, load)
        self.server = uvicorn.Server(uvicorn_config(self.app, "127.0.0.1", 0, config))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.wait_ready = wait_ready
        self.ready_timeout = ready_timeout
        self.url = ""

    @property
    def state(self) -> Any:
        return self.app.state.serve

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + self.ready_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        if self.wait_ready:
            if not self.state.started.wait(timeout=max(0.0, deadline - time.monotonic())):
                raise RuntimeError("model did not load in time")
            if self.state.load_error:
                raise RuntimeError(f"model failed to load: {self.state.load_error}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
