"""The RQ jobs of a dataset request (issue 4): chunk jobs synthesize, one assembly job bundles.

A request for n samples becomes ``ceil(n / chunk_size)`` chunk jobs and one assembly job that depends
on all of them (RQ's own dependencies). Chunk c makes the samples ``c * chunk_size ...`` of the request;
sample k depends only on (artifacts, request, seed, k) (:func:`worker.pipeline.synthesize`), so the
chunk's seeds derive from the request's seed and its first index, and any number of workers on any
number of hosts, with any chunk size, make the same dataset.

A chunk saves its samples with :func:`worker.chunks.save_chunk` (atomic), and a chunk that finds its
file already there returns at once. So a worker killed mid-chunk (``kill -9``) loses nothing and
duplicates nothing: RQ retries the abandoned chunk (``Retry``), which starts over and writes the same
file, and the assembly job adds each chunk file's samples exactly once, in order.

Fairness between owners: each owner's jobs go to a queue of its own (:func:`owner_queue`), named in a
Redis set that the workers read before every dequeue and consume round-robin
(:class:`worker.runner.SynthesisWorker`), so one owner's thousand queued chunks delay another's next
chunk by one chunk per worker, not by a thousand.

Every job Redis keeps expires: finished and failed jobs after ``bundle_ttl_s``; a cancelled
dataset's jobs are deleted.

Jobs are plain functions of JSON arguments (RQ's JSON serializer); progress goes to ``job.meta``.
"""

import dataclasses
import logging
import shutil
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, Field
from redis import Redis
from rq import Queue, Retry, Worker, get_current_job
from rq.command import send_stop_job_command
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from mrisynth.artifacts import Manifest
from mrisynth.settings import Settings, get_settings
from worker.bundle import BundleWriter
from worker.bundle_layout import BundleOptions
from worker.chunks import load_outcome, load_samples, save_chunk
from worker.pipeline import AcceptanceError, SynthesisProgress, synthesize
from worker.request import SynthesisRequest
from worker.sessions import Synthesizer

log = logging.getLogger(__name__)


class DatasetSpec(BaseModel):
    """Everything the jobs of one dataset need, JSON-ready (the job arguments).

    Attributes:
        dataset_id: the dataset's id: letters, digits, ``-`` and ``_``.
        n: samples requested, >= 1.
        seed: the request's seed, >= 0.
        request: what to synthesize.
        bundle: how to lay out the bundle.
        chunk_size: samples per chunk job, >= 1.
        allow_short: when a sample is not accepted within its attempt bound, deliver the samples
            made so far instead of failing the dataset.
        task: ``synthesis`` (default) or ``translation`` of an uploaded scan set
            (``request.structure_source``) into ``request.modalities`` (:mod:`worker.scan_jobs`).
    """

    dataset_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    n: int = Field(ge=1)
    seed: int = Field(ge=0)
    request: SynthesisRequest = SynthesisRequest()
    bundle: BundleOptions = BundleOptions()
    chunk_size: int = Field(default=16, ge=1)
    allow_short: bool = False
    task: Literal["synthesis", "translation"] = "synthesis"

    @property
    def on_scan(self) -> bool:
        """Whether the dataset works on an uploaded scan (one job, :mod:`worker.scan_jobs`, no chunks)."""
        return isinstance(self.request.structure_source, Path)

    def chunks(self) -> list[range]:
        """Sample indices of each chunk, in order; none for a dataset on an uploaded scan."""
        if self.on_scan:
            return []
        return [
            range(start, min(start + self.chunk_size, self.n)) for start in range(0, self.n, self.chunk_size)
        ]


def open_bundle(out: Path, spec: DatasetSpec, manifest: Manifest) -> BundleWriter:
    """A bundle writer for the spec's samples: its modalities, the artifacts' voxel size and hashes; the
    request it records is the spec with those bundle options (not the defaults the client sent)."""
    options = dataclasses.replace(
        spec.bundle, modalities=spec.request.modalities, voxel_size_mm=manifest.voxel_size_mm
    )
    hashes = {name: entry.sha256 for name, entry in manifest.files().items()}
    request = spec.model_copy(update={"bundle": options}).model_dump(mode="json")
    return BundleWriter(out, options, request=request, seed=spec.seed, artifacts=hashes)


def dataset_dir(settings: Settings, dataset_id: str) -> Path:
    """Folder of a dataset's chunk files and bundle."""
    return settings.data_dir / "datasets" / dataset_id


def bundle_path(settings: Settings, dataset_id: str) -> Path:
    """The dataset's finished bundle zip."""
    return dataset_dir(settings, dataset_id) / f"{dataset_id}.zip"


def _chunk_path(settings: Settings, dataset_id: str, chunk: int) -> Path:
    return dataset_dir(settings, dataset_id) / "chunks" / f"{chunk:05d}.npz"


def chunk_job_id(dataset_id: str, chunk: int) -> str:
    """RQ job id of a chunk job."""
    return f"{dataset_id}_chunk_{chunk:05d}"


def assembly_job_id(dataset_id: str) -> str:
    """RQ job id of a dataset's assembly job."""
    return f"{dataset_id}_assemble"


def dataset_queue(connection: Redis, settings: Settings | None = None, name: str | None = None) -> Queue:
    """A synthesis queue, with RQ's JSON serializer (job arguments are plain JSON): the base queue
    ``settings.queue``, or the queue ``name``."""
    return Queue(name or (settings or get_settings()).queue, connection=connection, serializer=JSONSerializer)


def _queues_key(settings: Settings) -> str:
    return f"mrisynth:{settings.queue}:queues"


def owner_queue(connection: Redis, owner: str, settings: Settings | None = None) -> Queue:
    """The queue of one owner's jobs, ``<settings.queue>.<first 16 characters of the owner id>``,
    registered for the workers (:func:`synthesis_queues`)."""
    settings = settings or get_settings()
    name = f"{settings.queue}.{owner[:16]}"
    connection.sadd(_queues_key(settings), name)
    return dataset_queue(connection, settings, name)


def synthesis_queues(connection: Redis, settings: Settings | None = None) -> list[Queue]:
    """The base queue and every owner's queue, by name."""
    settings = settings or get_settings()
    members = cast(set[bytes], connection.smembers(_queues_key(settings)))
    names = sorted(member.decode() for member in members)
    return [dataset_queue(connection, settings), *(dataset_queue(connection, settings, n) for n in names)]


def live_workers(connection: Redis, settings: Settings | None = None) -> int:
    """Workers of this deployment (every one listens on the base queue, :func:`synthesis_queues`) whose
    last heartbeat is within their ttl (a worker killed with ``kill -9`` stops counting once its
    heartbeat is that old)."""
    settings = settings or get_settings()
    now = datetime.now(UTC)
    live = 0
    for worker in Worker.all(connection=connection, serializer=JSONSerializer):
        beat = worker.last_heartbeat
        if beat is None or settings.queue not in worker.queue_names():
            continue
        if now - beat.replace(tzinfo=beat.tzinfo or UTC) <= timedelta(seconds=worker_ttl_s(settings)):
            live += 1
    return live


def worker_ttl_s(settings: Settings) -> int:
    """The workers' ttl: an idle worker heartbeats every ``maintenance_interval_s``; RQ adds 15 s."""
    return settings.maintenance_interval_s + 15


@cache
def loaded_synthesizer(artifacts_dir: Path) -> Synthesizer:
    """The artifacts' ONNX sessions, opened once per process."""
    return Synthesizer.load(artifacts_dir)


def enqueue_dataset(queue: Queue, spec: DatasetSpec, settings: Settings | None = None) -> Job:
    """Queue the chunk jobs of a dataset and its assembly job; returns the assembly job.

    Chunk jobs are retried ``settings.chunk_retries`` times when their worker dies; the assembly job
    starts when every chunk job has finished. A dataset on an uploaded scan is one job under the
    assembly job's id, :func:`worker.scan_jobs.run_scan_dataset` (named, as it imports this module).
    """
    settings = settings or get_settings()
    arguments = spec.model_dump(mode="json")
    if spec.on_scan:
        return queue.enqueue(
            "worker.scan_jobs.run_scan_dataset",
            arguments,
            job_id=assembly_job_id(spec.dataset_id),
            job_timeout=settings.chunk_timeout_s,
            retry=Retry(max=settings.chunk_retries),
            result_ttl=settings.bundle_ttl_s,
            failure_ttl=settings.bundle_ttl_s,
        )
    chunk_jobs = queue.enqueue_many(
        [
            Queue.prepare_data(
                run_chunk,
                args=(arguments, chunk),
                job_id=chunk_job_id(spec.dataset_id, chunk),
                timeout=settings.chunk_timeout_s,
                retry=Retry(max=settings.chunk_retries),
                result_ttl=settings.bundle_ttl_s,
                failure_ttl=settings.bundle_ttl_s,
                meta={"progress": SynthesisProgress(requested=len(indices)).model_dump(mode="json")},
            )
            for chunk, indices in enumerate(spec.chunks())
        ]
    )
    return queue.enqueue(
        assemble_dataset,
        arguments,
        job_id=assembly_job_id(spec.dataset_id),
        depends_on=chunk_jobs,
        job_timeout=settings.chunk_timeout_s,
        result_ttl=settings.bundle_ttl_s,
        failure_ttl=settings.bundle_ttl_s,
    )


def run_chunk(arguments: dict, chunk: int) -> dict:
    """Chunk job: synthesize the chunk's samples and save them; returns the chunk's counters (JSON).

    Progress (:class:`~worker.pipeline.SynthesisProgress`) is kept in ``job.meta["progress"]`` after
    every batch. A sample that is not accepted within its attempt bound ends the chunk short: the
    samples made so far are saved with the reason, and the assembly job decides (``allow_short``).
    """
    spec, settings, job = DatasetSpec.model_validate(arguments), get_settings(), get_current_job()
    path = _chunk_path(settings, spec.dataset_id, chunk)
    if path.exists():
        log.info("chunk %d of %s was saved before this retry", chunk, spec.dataset_id)
        return load_outcome(path)[0].model_dump(mode="json")
    indices = spec.chunks()[chunk]

    def report(progress: SynthesisProgress) -> None:
        if job is not None:
            job.meta["progress"] = progress.model_dump(mode="json")
            job.save_meta()

    synthesizer = loaded_synthesizer(settings.artifacts_dir)
    try:
        result = synthesize(
            synthesizer,
            spec.request,
            spec.seed,
            len(indices),
            settings.batch_size,
            first_index=indices.start,
            progress=report,
        )
        short = None
    except AcceptanceError as error:
        result, short = error.result, str(error)
    report(result.progress)
    save_chunk(path, result.samples, result.progress, short)
    return result.progress.model_dump(mode="json")


def assemble_dataset(arguments: dict) -> dict:
    """Assembly job: stream every chunk's samples, in order, into the bundle zip; remove the chunks.

    Returns:
        The bundle's path, sample count and whether it is short (JSON).

    Raises:
        RuntimeError: a chunk stopped short and the request does not allow a short dataset, or no
            sample at all was accepted; the message says the acceptance rate and which threshold to
            relax.
    """
    spec, settings = DatasetSpec.model_validate(arguments), get_settings()
    chunks = [_chunk_path(settings, spec.dataset_id, c) for c in range(len(spec.chunks()))]
    outcomes = [load_outcome(chunk) for chunk in chunks]
    shortfalls = [short for _, short in outcomes if short]
    if shortfalls and not (spec.allow_short and sum(progress.accepted for progress, _ in outcomes) > 0):
        raise RuntimeError(shortfalls[0])
    manifest = loaded_synthesizer(settings.artifacts_dir).manifest
    out = bundle_path(settings, spec.dataset_id)
    with open_bundle(out, spec, manifest) as bundle:
        for chunk in chunks:
            for sample in load_samples(chunk):
                bundle.add(sample)
    shutil.rmtree(chunks[0].parent)
    log.info("dataset %s: %d samples in %s", spec.dataset_id, len(bundle), out)
    return {"path": str(out), "samples": len(bundle), "short": bool(shortfalls)}


def cancel_dataset(
    connection: Redis, dataset_id: str, settings: Settings | None = None, stop_timeout_s: float = 30.0
) -> None:
    """Stop a dataset: delete its assembly and queued chunks, stop its running chunks, remove its files,
    then delete the stopped chunks too, so that Redis keeps nothing of it.

    The assembly job goes first, so it never starts; a running chunk's work-horse is killed (RQ's
    stop-job command) and the files are removed once no chunk runs any more (or after
    ``stop_timeout_s``). Jobs that have expired from Redis are skipped; the files go all the same.
    """
    settings = settings or get_settings()
    try:
        assembly = Job.fetch(assembly_job_id(dataset_id), connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        chunks: list[Job] = []
    else:
        fetched = Job.fetch_many(assembly.dependency_ids, connection=connection, serializer=JSONSerializer)
        chunks = [job for job in fetched if job is not None]
        assembly.delete()
    running = []
    for job in chunks:
        if job.get_status(refresh=True) == JobStatus.STARTED:
            send_stop_job_command(connection, job.id, serializer=JSONSerializer)
            running.append(job)
        else:
            job.delete()
    deadline = time.monotonic() + stop_timeout_s
    while any(job.get_status(refresh=True) == JobStatus.STARTED for job in running):
        if time.monotonic() > deadline:
            log.warning("dataset %s: chunks still running %.0f s after the stop", dataset_id, stop_timeout_s)
            break
        time.sleep(0.1)
    shutil.rmtree(dataset_dir(settings, dataset_id), ignore_errors=True)
    for job in running:
        job.delete()
    log.info("dataset %s cancelled", dataset_id)
