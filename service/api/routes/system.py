"""Operations: liveness, readiness, the loaded model's manifest and the Prometheus metrics."""

import logging

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from mrisynth.artifacts import Manifest
from service.api.deps import ContextDep, get_owner
from service.api.responses import errors
from service.schemas import Health, Readiness
from worker.jobs import live_workers

log = logging.getLogger(__name__)

REDIS_UNREACHABLE = {
    "redis": "unreachable: the service cannot reach Redis",
    "workers": "unknown: Redis is unreachable",
}
"""The ``/readyz`` checks of a Redis outage: a fixed text, as the error names Redis' address."""

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process answers (on the event loop itself: no thread pool, however busy, delays it)."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready, and why"}},
)
def readyz(context: ContextDep) -> JSONResponse:
    """200 when Redis answers, the artifacts are loaded and a worker is alive (its RQ heartbeat within
    its ttl, :func:`worker.jobs.live_workers`); else 503 with why. Redis' address goes to the log only."""
    checks = {"artifacts": "ok" if context.manifest else f"not loaded: {context.artifacts_error}"}
    try:
        context.connection.ping()
        workers = live_workers(context.connection, context.settings)
    except RedisError as error:
        log.error("readyz: Redis unreachable: %s", error)
        checks |= REDIS_UNREACHABLE
    else:
        checks |= {"redis": "ok", "workers": "ok" if workers else f"no worker on queue {context.queue.name}"}
    ready = all(value == "ok" for value in checks.values())
    body = Readiness(ready=ready, checks=checks).model_dump()
    return JSONResponse(
        body, status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
    )


@router.get("/models", dependencies=[Depends(get_owner)], responses=errors(401, 503))
def models(context: ContextDep) -> Manifest:
    """The manifest of the loaded artifacts (``docs/artifacts.md``)."""
    if context.manifest is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"artifacts not loaded: {context.artifacts_error}"
        )
    return context.manifest


@router.get(
    "/metrics",
    dependencies=[Depends(get_owner)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **errors(401)},
)
def metrics(context: ContextDep) -> Response:
    """Prometheus metrics: requests, datasets by state, queue depth, workers, samples/s."""
    return Response(context.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
