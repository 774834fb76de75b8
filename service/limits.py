"""A cap on request bodies, answered like every other error: ``413 {"detail": "request body: ..."}``.

A declared ``Content-Length`` over the cap is refused before the body is read; a body sent without one
(chunked) is counted as it arrives and refused once it passes the cap, so no upload is ever held or
spooled beyond ``max_bytes``.
"""

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413.

    Args:
        app: the app.
        max_bytes: largest body accepted, in bytes.
        setting: the setting's name, shown in the answer.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, setting: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = f"request body: larger than {max_bytes} bytes (the service's {setting})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self.detail}, status.HTTP_413_CONTENT_TOO_LARGE)(
                scope, receive, send
            )
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, self.detail)
            return message

        await self.app(scope, counted, send)
