"""What every request of one app needs: settings, Redis, the queue, the records, the model, the metrics."""

import logging
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from mrisynth.artifacts import ArtifactError, Manifest, verify_artifacts
from mrisynth.settings import Settings
from service.metrics import Metrics
from service.store import Store
from worker.jobs import dataset_queue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceContext:
    """The app's shared state, built once by :func:`build_context`.

    Attributes:
        settings: the service's settings.
        connection: Redis for RQ (bytes, as RQ wants it).
        queue: the base synthesis queue (each owner's jobs go to its own, :func:`worker.jobs.owner_queue`).
        store: the service's records (a text-mode client of the same Redis).
        manifest: the artifacts' manifest, None if they failed to load.
        artifacts_error: why they failed to load, else None.
        metrics: the app's Prometheus metrics.
    """

    settings: Settings
    connection: Redis
    queue: Queue
    store: Store
    manifest: Manifest | None
    artifacts_error: str | None
    metrics: Metrics


def build_context(settings: Settings) -> ServiceContext:
    """Connect to Redis (lazily: nothing is sent yet) and verify the artifacts.

    Raises:
        ValueError: if ``settings.redis_url`` is not set.
    """
    if settings.redis_url is None:
        raise ValueError("the service needs Redis: set REDIS_URL, e.g. REDIS_URL=redis://localhost:6379/0")
    connection = Redis.from_url(settings.redis_url)
    queue = dataset_queue(connection, settings)
    store = Store(Redis.from_url(settings.redis_url, decode_responses=True), f"mrisynth:{settings.queue}:")
    manifest, error = None, None
    try:
        manifest = verify_artifacts(settings.artifacts_dir)
    except ArtifactError as exc:
        error = str(exc)
        log.error("artifacts not loaded, the service is not ready: %s", error)
    metrics = Metrics(store, connection, settings)
    return ServiceContext(settings, connection, queue, store, manifest, error, metrics)
