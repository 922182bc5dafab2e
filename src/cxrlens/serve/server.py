"""Running the app under uvicorn with the connection limits of :class:`cxrlens.serve.limits.ServeLimits`:
in the foreground (``cxrlens serve``) or in a background thread on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from cxrlens.serve.limits import ServeLimits


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Config:
    """uvicorn's config for ``app``, bounded by the limits the app was created with."""
    limits: ServeLimits = app.state.limits
    return uvicorn.Config(app, host=host, port=port, log_level="warning", limit_concurrency=limits.max_connections,
                          timeout_keep_alive=limits.keep_alive_seconds)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", start_timeout: float = 30.0) -> Iterator[str]:
    """``with background_server(app) as url:`` - the app served at ``url`` until the block ends."""
    server = uvicorn.Server(server_config(app, host, free_port(host)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the background server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
