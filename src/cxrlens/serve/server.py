"""Running the app under uvicorn with the connection limits of :class:`cxrlens.serve.limits.ServeLimits`
(h11 with a deadline for request headers): in the foreground (``cxrlens serve``) or in a background thread
on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from cxrlens.serve.limits import ServeLimits


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers: a connection that opens and
    sends nothing, or half a request line, is closed after ``header_timeout`` seconds (uvicorn itself
    starts no timer until a first request has been answered, so idle connections could fill the
    connection limit for good). The body's own deadline is :class:`cxrlens.serve.limits.UploadGuard`'s."""

    header_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:  # a request's headers have arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request's headers are due in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Config:
    """uvicorn's config for ``app``, bounded by the limits the app was created with."""
    limits: ServeLimits = app.state.limits
    protocol = type("HeaderDeadline", (HeaderDeadlineProtocol,), {"header_timeout": limits.header_timeout})
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=protocol,
                          limit_concurrency=limits.max_connections, timeout_keep_alive=limits.keep_alive_seconds)


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
