"""Run an ASGI app with uvicorn in a background thread on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def background_server(app, host: str = "127.0.0.1", start_timeout: float = 30.0) -> Iterator[str]:  # noqa: ANN001
    """``with background_server(app) as url:`` - the app served at ``url`` until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=free_port(host), log_level="warning"))
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
