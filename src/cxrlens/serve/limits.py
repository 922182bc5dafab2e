"""What the server accepts, and the ASGI middleware that holds uploads to it before the app sees them.

* A body-carrying request without a Content-Length, or with a Transfer-Encoding (a chunked
  body would not be held to its declared length), gets 411; one declaring more than
  ``max_upload_bytes`` gets 413: both answered from the headers alone, with ``Connection:
  close``; at most ``refused_drain_bytes`` of the refused body are read and dropped
  (within ``refused_drain_seconds``), so a client still sending sees the answer, not a reset.
* A body that sends more than it declared gets 413, one that does not arrive in full
  within ``body_timeout`` seconds 408, and the connection is closed, so a slow or stalled
  client cannot hold a worker.
* Open connections are bounded by the HTTP server (``max_connections``; uvicorn answers
  503 beyond it); a connection must send its request headers within ``header_timeout``
  seconds (:mod:`cxrlens.serve.server`), and idle keep-alive connections close after
  ``keep_alive_seconds``.

Every refusal is JSON ``{"detail": ...}``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class ServeLimits:
    """``max_upload_bytes``: largest request body; ``max_pending``: requests in progress before 429;
    ``kept``: predictions whose pictures stay available; ``picture_side``: longest side of pictures
    (and of the copy of an upload kept in memory); ``body_timeout``: seconds a body may take;
    ``max_connections``: open connections; ``header_timeout``: seconds to send a request's headers;
    ``keep_alive_seconds``: idle keep-alive."""

    max_upload_bytes: int = 32 * 2**20
    max_pending: int = 16
    kept: int = 16
    picture_side: int = 1024
    body_timeout: float = 30.0
    max_connections: int = 64
    header_timeout: float = 10.0
    keep_alive_seconds: float = 5.0
    refused_drain_bytes: int = 2**20
    refused_drain_seconds: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pending", "kept", "picture_side", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("body_timeout", "header_timeout", "keep_alive_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")


class UploadGuard:
    """The 411 / 413 / 408 rules of the module docstring, in front of ``app``."""

    def __init__(self, app: ASGIApp, limits: ServeLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None or b"transfer-encoding" in headers:
            await _refuse(scope, receive, send, 411, "the request needs a Content-Length header and no "
                                                     "Transfer-Encoding", self.limits)
            return
        if not declared.isdigit() or int(declared) > self.limits.max_upload_bytes:
            await _refuse(scope, receive, send, 413, f"upload of {declared.decode(errors='replace')} bytes exceeds the "
                                                     f"limit of {self.limits.max_upload_bytes:,} bytes", self.limits)
            return
        await self._held(scope, receive, send, int(declared))

    async def _held(self, scope: Scope, receive: Receive, send: Send, declared: int) -> None:
        """Run the app with the body held to its declared length and deadline; past either, the app's own
        answer is dropped for a 413 or a 408."""
        deadline = time.monotonic() + self.limits.body_timeout
        state: dict = {"body_done": False, "received": 0, "refusal": None}

        async def held_receive() -> Message:
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                state["refusal"] = (408, f"the request body did not arrive within {self.limits.body_timeout:g} seconds")
                return {"type": "http.disconnect"}
            state["received"] += len(message.get("body", b""))
            if state["received"] > declared:
                state["refusal"] = (413, f"the request body is longer than its declared {declared:,} bytes")
                return {"type": "http.disconnect"}
            state["body_done"] = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            if state["refusal"] is None:
                await send(message)

        try:
            await self.app(scope, held_receive, guarded_send)
        except Exception:
            if state["refusal"] is None:
                raise
        if state["refusal"] is not None:
            status, detail = state["refusal"]
            await JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})(
                scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str, limits: ServeLimits) -> None:
    """Answer ``status`` now and close; read at most a bounded part of the body meanwhile."""
    await JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})(scope, receive, send)
    drained, deadline = 0, time.monotonic() + limits.refused_drain_seconds
    while drained < limits.refused_drain_bytes:
        try:
            message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))
