"""ASGI middleware refusing request bodies over a size limit before they are read.

The limit is checked on the declared Content-Length (the HTTP server stops a body at
its declared length); a body-carrying request without one is refused, so no upload can
be streamed past the limit. A refused body is read and dropped chunk by chunk (never
held), so the client receives the answer instead of a connection reset.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class UploadSizeLimit:
    """413 for a body over ``max_bytes``, 411 for a body without Content-Length; JSON ``{"detail"}``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _BODY_METHODS:
            declared = dict(scope["headers"]).get(b"content-length")
            refusal = None
            if declared is None:
                refusal = JSONResponse({"detail": "the request needs a Content-Length header"}, status_code=411)
            elif not declared.isdigit() or int(declared) > self.max_bytes:
                refusal = JSONResponse({"detail": f"upload of {declared.decode(errors='replace')} bytes exceeds the "
                                                  f"limit of {self.max_bytes:,} bytes"}, status_code=413)
            if refusal is not None:
                await _discard_body(receive)  # read and drop it, so the client gets the answer, not a reset
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _discard_body(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
