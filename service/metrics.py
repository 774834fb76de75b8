"""Prometheus metrics of the service (``GET /metrics``), in a registry of the app's own.

Per process: requests answered (by method, route template and status) and their latency, and the samples
of the datasets this process saw finish. Shared by all processes, read from Redis at each scrape:
datasets by state, the queues' depth (jobs waiting, every owner's queue), live workers (by heartbeat,
:func:`worker.jobs.live_workers`) and the current synthesis rate (the samples/s of the running
datasets).
"""

import time
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mrisynth.settings import Settings
from service.schemas import DatasetState
from service.store import Store
from worker.jobs import live_workers, synthesis_queues

STATES: tuple[DatasetState, ...] = ("queued", "running", "finished", "failed", "cancelled")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name; any other (clients may send any token) is counted as ``other``, so that
they cannot make new series without end."""


class _JobsCollector(Collector):
    """Datasets by state, queue depth, workers and samples/s, from Redis at scrape time."""

    def __init__(self, store: Store, connection: Redis, settings: Settings) -> None:
        self.store = store
        self.connection = connection
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        summaries = self.store.summaries()
        states = Tally(state for state, _ in summaries)
        datasets = GaugeMetricFamily("mrisynth_datasets", "Datasets by state", labels=["state"])
        for state in STATES:
            datasets.add_metric([state], states[state])
        yield datasets
        depth = sum(queue.count for queue in synthesis_queues(self.connection, self.settings))
        yield GaugeMetricFamily("mrisynth_queue_depth", "Jobs waiting in the queues", value=depth)
        workers = live_workers(self.connection, self.settings)
        yield GaugeMetricFamily("mrisynth_workers", "Workers with a recent heartbeat", value=workers)
        rate = sum(progress.samples_per_s or 0.0 for state, progress in summaries if state == "running")
        yield GaugeMetricFamily(
            "mrisynth_samples_per_second", "Accepted samples per second of the running datasets", value=rate
        )


class Metrics:
    """The app's metrics and their registry.

    Args:
        store: the dataset records (for datasets by state and samples/s).
        connection: Redis of the queues (for their depth and the workers).
        settings: the service's settings (the queues' names).
    """

    def __init__(self, store: Store, connection: Redis, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mrisynth_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mrisynth_http_request_duration_seconds",
            "Time to answer an HTTP request (to the start of the response body)",
            ["method", "route"],
            registry=self.registry,
        )
        self.samples = Counter(
            "mrisynth_samples", "Samples of the datasets this process saw finish", registry=self.registry
        )
        self.registry.register(_JobsCollector(store, connection, settings))

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request by its method (see :data:`METHODS`) and
    route template (not its path, so that ids do not make new series).

    Args:
        app: the app.
        metrics: where to count.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        method = scope["method"] if scope["method"] in METHODS else "other"

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(method, route, str(status)).inc()
