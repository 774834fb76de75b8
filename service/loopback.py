"""Without API keys the service is for the loopback only, whoever starts it.

:func:`requires_loopback` says when; ``mrisynth serve`` then refuses a public ``--host``
(:func:`service.embedded.check_host`), and the app itself answers ``403`` to any client that is not on
the loopback (:class:`LoopbackOnly`), so ``uvicorn service.app:create_app --factory --host 0.0.0.0``
or a container started without ``MRISYNTH_API_KEYS`` serves no one else either.
"""

import ipaddress

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mrisynth.settings import Settings

LOOPBACK_ONLY = "no API keys configured: serving on loopback only"
"""Logged at start without API keys."""


def requires_loopback(settings: Settings) -> bool:
    """Whether the service may only serve the loopback: without API keys anyone who reaches it could
    use it."""
    return not settings.api_keys


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``localhost`` or an IP address, IPv4-mapped IPv6 too) is a loopback address."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class LoopbackOnly:
    """ASGI middleware answering ``403`` to HTTP clients beyond the loopback (a Unix-socket client,
    which has no address, is local).

    Args:
        app: the app.
    """

    detail = (
        "Authorization: this service has no API keys configured, so it answers loopback clients only; "
        "set MRISYNTH_API_KEYS to serve others"
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client is not None and not is_loopback(client[0]):
            await JSONResponse({"detail": self.detail}, status.HTTP_403_FORBIDDEN)(scope, receive, send)
            return
        await self.app(scope, receive, send)
