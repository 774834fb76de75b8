"""The worker process (``mrisynth worker``): RQ's forking worker on the synthesis queue.

The ONNX sessions are opened once, before the work-horses fork, when they run on the CPU (CPU sessions
work in a forked child); CUDA contexts do not survive a fork, so with the GPU build each work-horse
opens its own. Either way the artifacts are verified at start, so a broken artifacts directory stops
the worker with a clear error instead of failing every job.
"""

import logging

import onnxruntime as ort
from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import DequeueStrategy

from mrisynth.artifacts import verify_artifacts
from mrisynth.settings import Settings
from worker.jobs import loaded_synthesizer, synthesis_queues, worker_ttl_s
from worker.sessions import CUDA

log = logging.getLogger(__name__)

QUEUE_REFRESH_S = 2
"""Longest an idle worker blocks on the queues it knows before it reads the owners' queues again."""


class SynthesisWorker(Worker):
    """RQ's worker on every owner's queue, round-robin, with a configurable grace before a silent job
    counts as abandoned.

    Before every dequeue the worker reads the owners' queues (:func:`worker.jobs.synthesis_queues`);
    an idle worker reads them again every ``QUEUE_REFRESH_S``, so a new owner's first job waits no
    longer than that. RQ's round-robin strategy moves the queue a job came from to the end of the
    order, so the owners with queued jobs take turns.

    RQ renews a running job's heartbeat every ``job_monitoring_interval`` seconds; when a worker dies
    (``kill -9``, a lost host) another worker's maintenance finds the job's heartbeat expired after
    ``heartbeat_grace_s`` more and retries it (the chunk jobs have ``Retry``).
    """

    def __init__(self, settings: Settings, connection: Redis, **kwargs: object) -> None:
        super().__init__(
            synthesis_queues(connection, settings),
            connection=connection,
            serializer=JSONSerializer,
            job_monitoring_interval=settings.job_monitoring_interval_s,
            maintenance_interval=settings.maintenance_interval_s,
            worker_ttl=worker_ttl_s(settings),
            **kwargs,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.heartbeat_grace_s = settings.heartbeat_grace_s

    def refresh_queues(self) -> None:
        """Take in the owners' queues made since the last dequeue, keeping the round-robin order."""
        queues = {queue.name: queue for queue in synthesis_queues(self.connection, self.settings)}
        kept = [queue for queue in self._ordered_queues if queue.name in queues]
        known = {queue.name for queue in kept}
        self._ordered_queues = kept + [queue for name, queue in queues.items() if name not in known]
        self.queues = list(queues.values())

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, blocking at most ``QUEUE_REFRESH_S`` at a time between reads of the queues.
        RQ's burst mode (``timeout`` None: one look at each queue) and a ``max_idle_time`` (RQ's own
        count of idle time) get RQ's dequeue as it is, after one read of the queues."""
        self.refresh_queues()
        if timeout is None or max_idle_time is not None:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while (result := super().dequeue_job_and_maintain_ttl(timeout, QUEUE_REFRESH_S)) is None:
            self.refresh_queues()
        return result

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Seconds until the job's next heartbeat is due, plus the grace."""
        interval = float(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(interval) + self.heartbeat_grace_s


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Work the synthesis queue of ``settings.redis_url`` until stopped (or, with ``burst``, until empty)."""
    if settings.redis_url is None:
        raise ValueError("the worker needs Redis: set REDIS_URL, e.g. REDIS_URL=redis://localhost:6379/0")
    if CUDA in ort.get_available_providers():
        verify_artifacts(settings.artifacts_dir)
    else:
        loaded_synthesizer(settings.artifacts_dir)
    worker = SynthesisWorker(settings, Redis.from_url(settings.redis_url))
    log.info("worker %s on queues %s.*, artifacts %s", worker.name, settings.queue, settings.artifacts_dir)
    worker.work(burst=burst, logging_level="INFO", dequeue_strategy=DequeueStrategy.ROUND_ROBIN)
