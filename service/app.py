"""The FastAPI app: ``uvicorn service.app:create_app --factory`` (settings from the environment).

Routes are in :mod:`service.api.routes`; the API by example is ``docs/api.md``. Besides the routes the
app counts and times requests (:mod:`service.metrics`), answers Redis outages with 503, limits request
bodies to ``max_upload_bytes``, answers a body it cannot validate with 422 naming the fields but never
echoing the input (NaN included), with API keys asks for one before anything else (:mod:`service.auth`),
without them answers loopback clients only (:mod:`service.loopback`), puts security headers on every
answer and ``HEAD`` wherever ``GET`` is (:mod:`service.headers`) and, while it runs, sweeps the datasets
every ``sweep_interval_s`` (:func:`service.status.sweep`: progress refreshed, expired bundles removed).
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from mrisynth.settings import Settings, get_settings
from service.api.deps import reject_unknown_query
from service.api.responses import errors
from service.api.routes import datasets, docs, lesion_sets, scan_sets, system, translations
from service.auth import KeyRequired
from service.context import ServiceContext, build_context
from service.headers import HeadAsGet, SecurityHeaders
from service.limits import BodyLimit
from service.loopback import LOOPBACK_ONLY, LoopbackOnly, requires_loopback
from service.metrics import RequestMetrics
from service.parsing import ParsePool
from service.status import sweep

log = logging.getLogger(__name__)

__all__ = ["LOOPBACK_ONLY", "ROUTERS", "create_app", "requires_loopback"]


async def _sweep_forever(context: ServiceContext) -> None:
    """Sweep the datasets every ``sweep_interval_s`` while the app runs; a Redis outage skips a round."""
    while True:
        await asyncio.sleep(context.settings.sweep_interval_s)
        try:
            await run_in_threadpool(sweep, context)
        except RedisError as error:
            log.warning("sweep skipped, Redis is unreachable: %s", error)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run :func:`_sweep_forever` alongside the app, and its upload parsers (:mod:`service.parsing`)."""
    settings = app.state.context.settings
    app.state.parse_pool = ParsePool(settings.upload_parsers, settings.upload_parse_timeout_s)
    task = asyncio.create_task(_sweep_forever(app.state.context))
    try:
        yield
    finally:
        task.cancel()
        app.state.parse_pool.close()


async def _redis_unavailable(request: Request, error: Exception) -> Response:
    """503 for a Redis outage; the error, which names Redis' address, goes to the log only."""
    log.error("Redis unavailable: %s", error)
    return JSONResponse(
        {"detail": "Redis unavailable: the service cannot reach its job store; try again later"},
        status.HTTP_503_SERVICE_UNAVAILABLE,
    )


MAX_TEXT, MAX_ISSUES = 200, 20
"""Longest text (a message, a field name) and most validation errors a 422 answer carries."""


def _short(part: object) -> str | int:
    """A validation error's field path part or message, strings cut to ``MAX_TEXT`` characters."""
    return part if isinstance(part, int) else str(part)[:MAX_TEXT]


async def _invalid_request(request: Request, error: Exception) -> Response:
    """422 with each validation error's ``loc``, ``msg`` and ``type``, cut short: not the input (it may
    be large, or a NaN that JSON cannot carry), nor pydantic's context."""
    assert isinstance(error, RequestValidationError)
    issues = [
        {"loc": [_short(part) for part in issue["loc"]], "msg": _short(issue["msg"]), "type": issue["type"]}
        for issue in error.errors()[:MAX_ISSUES]
    ]
    return JSONResponse({"detail": issues}, status.HTTP_422_UNPROCESSABLE_CONTENT)


ROUTERS = (
    datasets.router,
    lesion_sets.router,
    scan_sets.router,
    translations.router,
    system.router,
    docs.router,
)
"""The API's routers, in the order they are included."""


async def _method_not_allowed(request: Request, error: Exception) -> Response:
    """405 with every method of the path in ``Allow`` (Starlette lists only those of its first route)."""
    path = request.url.path
    allowed = sorted(
        method
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.path_regex.match(path)
        for method in route.methods or ()
    )
    return JSONResponse(
        {"detail": f"method: {request.method} is not allowed on {path}; use {', '.join(allowed)}"},
        status.HTTP_405_METHOD_NOT_ALLOWED,
        headers={"Allow": ", ".join(allowed)},
    )


def _document_limits(app: FastAPI, settings: Settings) -> None:
    """Put the configured ``max_n`` into the OpenAPI schema, so that it allows what the service allows."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            properties = generate()["components"]["schemas"]["DatasetCreate"]["properties"]
            properties["n"]["maximum"] = settings.max_n
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service's app.

    Args:
        settings: default :func:`mrisynth.settings.get_settings` (the environment).

    Raises:
        ValueError: if no Redis URL is configured.
    """
    settings = settings or get_settings()
    context = build_context(settings)
    if requires_loopback(settings):
        log.warning(LOOPBACK_ONLY)
    app = FastAPI(
        title="mrisynth",
        summary="Synthetic registered multimodal brain MRI with tumor lesion labels",
        version="0.1.0",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(reject_unknown_query)],
        responses=errors(422),
        form_limits={"max_files": settings.max_upload_files},
    )
    app.state.context = context
    for router in ROUTERS:
        app.include_router(router)
    app.mount(docs.ASSETS_URL, docs.assets())
    _document_limits(app, settings)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(RedisError, _redis_unavailable)
    app.add_exception_handler(status.HTTP_405_METHOD_NOT_ALLOWED, _method_not_allowed)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes, setting="max_upload_bytes")
    app.add_middleware(HeadAsGet)
    if requires_loopback(settings):
        app.add_middleware(LoopbackOnly)
    else:
        app.add_middleware(KeyRequired, settings=settings)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics, metrics=context.metrics)
    return app
