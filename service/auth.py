"""API keys: who a bearer token is, and a gate that asks for one before a request body is read.

With API keys configured (``settings.api_keys``) every request but the probes (``/healthz``,
``/readyz``) needs ``Authorization: Bearer <key>``: the API, ``/models``, ``/metrics`` and ``/docs``
alike. The token is compared with each configured key in constant time (:func:`hmac.compare_digest`)
and the caller is known from then on by its sha256 only. :class:`KeyRequired` answers 401 from the
headers alone, so a keyless upload is refused before its body is read; the routes' dependency
(:func:`service.api.deps.get_owner`) then names the owner with the same :func:`owner_for`.
"""

import hashlib
import hmac

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from mrisynth.settings import Settings

LOCAL_OWNER = "local"
"""The owner of every record when no API key is configured."""

PROBES = frozenset({"/healthz", "/readyz"})
"""Paths answered without a key: the liveness and readiness probes (they name no tenant's data)."""


def owner_of(api_key: str) -> str:
    """The owner id of an API key: its sha256 (hex), so that records never hold the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def _unauthorized(why: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, f"Authorization: {why}", {"WWW-Authenticate": "Bearer"}
    )


def owner_for(settings: Settings, token: str | None) -> str:
    """The owner id of a bearer token (:data:`LOCAL_OWNER` when no keys are configured).

    Raises:
        HTTPException: 401 when keys are configured and the token is missing or not one of them.
    """
    keys = settings.api_keys
    if not keys:
        return LOCAL_OWNER
    if token is None:
        raise _unauthorized("a bearer token is required: Authorization: Bearer <API key>")
    valid = False
    for key in keys:
        valid |= hmac.compare_digest(token.encode(), key.encode())
    if not valid:
        raise _unauthorized("the bearer token is not an API key of this service")
    return owner_of(token)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None; parsed as FastAPI's
    ``HTTPBearer`` does for :func:`service.api.deps.get_owner`."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if scheme.lower() == "bearer" and token else None


class KeyRequired:
    """ASGI middleware answering 401 to a request without a valid key, before the app reads its body.

    Args:
        app: the app.
        settings: the service's settings (its ``api_keys``, which must not be empty).
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PROBES:
            try:
                owner_for(self.settings, bearer_token(Headers(scope=scope).get("authorization")))
            except HTTPException as error:
                answer = JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
