"""Operations: liveness, readiness, the loaded model's manifest and the Prometheus metrics."""

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from rq import Worker

from mrisynth.artifacts import Manifest
from service.api.deps import ContextDep
from service.api.responses import errors
from service.schemas import Health, Readiness

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz() -> Health:
    """The process answers."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready, and why"}},
)
def readyz(context: ContextDep) -> JSONResponse:
    """200 when Redis answers, the artifacts are loaded and a worker is alive; else 503 with why."""
    checks = {"artifacts": "ok" if context.manifest else f"not loaded: {context.artifacts_error}"}
    try:
        context.connection.ping()
        workers = Worker.count(connection=context.connection, queue=context.queue)
    except RedisError as error:
        checks |= {"redis": f"unreachable: {error}", "workers": "unknown: Redis is unreachable"}
    else:
        checks |= {"redis": "ok", "workers": "ok" if workers else f"no worker on queue {context.queue.name}"}
    ready = all(value == "ok" for value in checks.values())
    body = Readiness(ready=ready, checks=checks).model_dump()
    return JSONResponse(
        body, status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
    )


@router.get("/models", responses=errors(503))
def models(context: ContextDep) -> Manifest:
    """The manifest of the loaded artifacts (``docs/artifacts.md``)."""
    if context.manifest is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"artifacts not loaded: {context.artifacts_error}"
        )
    return context.manifest


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(context: ContextDep) -> Response:
    """Prometheus metrics: requests, datasets by state, queue depth, workers, samples/s."""
    return Response(context.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
