"""The worker process (``mrisynth worker``): RQ's forking worker on the synthesis queue.

The ONNX sessions are opened once, before the work-horses fork, when they run on the CPU (CPU sessions
work in a forked child); CUDA contexts do not survive a fork, so with the GPU build each work-horse
opens its own. Either way the artifacts are verified at start, so a broken artifacts directory stops
the worker with a clear error instead of failing every job.
"""

import logging

import onnxruntime as ort
from redis import Redis
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from mrisynth.artifacts import verify_artifacts
from mrisynth.settings import Settings
from worker.jobs import dataset_queue, loaded_synthesizer
from worker.sessions import CUDA

log = logging.getLogger(__name__)


class SynthesisWorker(Worker):
    """RQ's worker with a configurable grace before a silent job counts as abandoned.

    RQ renews a running job's heartbeat every ``job_monitoring_interval`` seconds; when a worker dies
    (``kill -9``, a lost host) another worker's maintenance finds the job's heartbeat expired after
    ``heartbeat_grace_s`` more and retries it (the chunk jobs have ``Retry``).
    """

    def __init__(self, *args: object, heartbeat_grace_s: int = 60, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.heartbeat_grace_s = heartbeat_grace_s

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
    connection = Redis.from_url(settings.redis_url)
    worker = SynthesisWorker(
        [dataset_queue(connection, settings)],
        connection=connection,
        serializer=JSONSerializer,
        job_monitoring_interval=settings.job_monitoring_interval_s,
        maintenance_interval=settings.maintenance_interval_s,
        # An idle worker blocks on the queue for worker_ttl - 15 s between maintenance runs.
        worker_ttl=settings.maintenance_interval_s + 15,
        heartbeat_grace_s=settings.heartbeat_grace_s,
    )
    log.info("worker %s on queue %s, artifacts %s", worker.name, settings.queue, settings.artifacts_dir)
    worker.work(burst=burst, logging_level="INFO")
