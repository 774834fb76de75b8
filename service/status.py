"""Where a dataset stands, read from its RQ jobs, and its end: finished, failed, expired.

A dataset's record (:mod:`service.store`) is brought up to date by :func:`refresh` whenever it is read
and by the periodic :func:`sweep`: the chunk jobs' ``meta["progress"]`` give the progress (cached in
the record, as RQ drops finished jobs after a while), the assembly job the outcome. A dataset on an
uploaded scan is one job (:mod:`worker.scan_jobs`), whose ``meta["progress"]``, a
:class:`~worker.scan_jobs.ScanProgress` saved after every batch of slices, gives its progress. The first
process to see a dataset end records it (:meth:`~service.store.Store.claim_final`, given back if recording
fails, so that the next refresh tries again): it hashes a finished zip once, or removes a failed
dataset's files. A finished bundle is removed ``bundle_ttl_s`` after it
finished (:func:`expire_if_due`, at access and in the sweep); its record stays a while as ``expired``.
"""

import logging
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from mrisynth.artifacts import sha256_file
from service.context import ServiceContext
from service.schemas import DatasetPublic, Progress
from service.store import FINAL_STATES, UPLOAD_KINDS, DatasetRecord
from service.uploads import expire_uploads
from worker.jobs import bundle_path, cancel_dataset, dataset_dir
from worker.scan_jobs import ScanProgress

log = logging.getLogger(__name__)

REJECTIONS: dict[str, str] = {
    "structure": "rejected_structure",
    "lesion": "rejected_lesion",
    "dice": "rejected_dice",
}
"""Public rejection reasons and the :class:`~worker.pipeline.SynthesisProgress` counters behind them."""

ENQUEUE_GRACE = timedelta(seconds=60)
"""How long a new record may lack its jobs (they are queued right after it is saved)."""


def _utc(moment: datetime | None) -> datetime | None:
    """RQ's timestamps as aware UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _error(job: Job) -> str:
    """The last line of a failed job's traceback, without the exception's class name."""
    result = job.latest_result()
    text = (result.exc_string or "") if result is not None else ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "the job failed without a message"
    return re.sub(r"^[A-Za-z_][\w.]*(Error|Exception): ", "", last.strip())


def _progress(record: DatasetRecord, chunks: dict[int, dict[str, Any]], end: datetime) -> Progress:
    """The dataset's progress from its chunks' counters, timed from its start to ``end``."""
    accepted = sum(chunk["accepted"] for chunk in chunks.values())
    rejected = {reason: sum(c[counter] for c in chunks.values()) for reason, counter in REJECTIONS.items()}
    rate = eta = None
    if record.started_at is not None and accepted:
        rate = accepted / max((end - record.started_at).total_seconds(), 1e-3)
        eta = (record.request.n - accepted) / rate
    return Progress(
        accepted=accepted, target=record.request.n, rejected=rejected, samples_per_s=rate, eta_s=eta
    )


def _scan_progress(record: DatasetRecord, assembly: Job | None, end: datetime) -> Progress:
    """The progress of a dataset on a scan from its job's :class:`~worker.scan_jobs.ScanProgress`, timed
    from its start to ``end``; the record's last one while the job has reported none."""
    reported = assembly.meta.get("progress") if assembly is not None else None
    if not reported:
        return record.progress
    scan = ScanProgress.model_validate(reported)
    rate = eta = None
    if record.started_at is not None and scan.slices_done:
        elapsed = max((end - record.started_at).total_seconds(), 1e-3)
        rate = scan.accepted / elapsed if scan.accepted else None
        eta = (scan.slices_total - scan.slices_done) * elapsed / scan.slices_done
    return record.progress.model_copy(
        update={
            "accepted": scan.accepted,
            "samples_per_s": rate,
            "eta_s": eta,
            "slices_done": scan.slices_done,
            "slices_total": scan.slices_total,
        }
    )


def _ending(
    context: ServiceContext, record: DatasetRecord, assembly: Job | None, chunks: list[Job | None]
) -> tuple[str, str | None] | None:
    """(final state, error) if the dataset's jobs have ended, else None."""
    status = assembly.get_status(refresh=False) if assembly is not None else None
    failed = next((j for j in chunks if j and j.get_status(refresh=False) == JobStatus.FAILED), None)
    if status == JobStatus.FINISHED or assembly is None:
        if bundle_path(context.settings, record.id).is_file():
            return "finished", None
        if assembly is not None:
            return "failed", "the bundle is missing: do the service and the workers share data_dir?"
        if datetime.now(UTC) - record.created_at > ENQUEUE_GRACE:
            return "failed", "the dataset's jobs are no longer in Redis"
        return None
    if status == JobStatus.FAILED or failed is not None:
        return "failed", _error(failed or assembly)
    if status in (JobStatus.CANCELED, JobStatus.STOPPED):
        return "cancelled", None
    return None


def _end(
    context: ServiceContext, record: DatasetRecord, state: str, error: str | None, ended: datetime
) -> None:
    """Record a dataset's end (the caller won :meth:`~service.store.Store.claim_final`); its chunks'
    cached progress is dropped, the record's own ``progress`` holds the sums."""
    store, settings = context.store, context.settings
    store.release_active(record.owner, record.id)
    store.drop_chunk_progress(record.id)
    record.ended_at, record.error = ended, error
    if state == "finished":
        path = bundle_path(settings, record.id)
        record.sha256, record.size_bytes = sha256_file(path), path.stat().st_size
        whole = {"accepted": record.request.n, "eta_s": 0.0}
        if record.progress.slices_total is not None:
            whole["slices_done"] = record.progress.slices_total
        record.progress = record.progress.model_copy(update=whole)
        record.state = "finished"
        fields = {"state", "progress", "sha256", "size_bytes", "started_at", "ended_at", "error"}
        store.update_dataset(record, fields)
        context.metrics.samples.inc(record.request.n)
        log.info("dataset %s finished: %d samples, %d bytes", record.id, record.request.n, record.size_bytes)
        return
    record.progress = record.progress.model_copy(update={"eta_s": None})
    if state == "failed":
        cancel_dataset(context.connection, record.id, settings)
        record.state = "failed"
    else:
        shutil.rmtree(dataset_dir(settings, record.id), ignore_errors=True)
        record.state = "cancelled"
    fields = {"state", "progress", "started_at", "ended_at", "error"}
    store.update_dataset(record, fields, ttl_s=settings.bundle_ttl_s)
    log.info("dataset %s %s%s", record.id, record.state, f": {error}" if error else "")


_TRACKED = {"state", "progress", "started_at"}
"""The fields :func:`refresh` updates while a dataset runs (written only when they change)."""


def refresh(context: ServiceContext, record: DatasetRecord) -> DatasetRecord:
    """The record brought up to date with its jobs (saved); a record in a final state as it is."""
    if record.state in FINAL_STATES:
        return record
    store = context.store
    before = record.model_dump(include=_TRACKED)
    assembly, *chunks = Job.fetch_many(
        record.job_ids(), connection=context.connection, serializer=JSONSerializer
    )
    seen = {
        c: job.meta["progress"]
        for c, job in enumerate(chunks)
        if job and job.meta.get("progress", {}).get("candidates")
    }
    cached = store.chunk_progress(record.id)
    store.save_chunk_progress(record.id, {c: p for c, p in seen.items() if cached.get(c) != p})
    on_scan = record.spec().on_scan
    runs = [assembly] if on_scan else chunks
    started = [moment for job in runs if job and (moment := _utc(job.started_at)) is not None]
    if record.started_at is None and started:
        record.started_at = min(started)
    ending = _ending(context, record, assembly, chunks)
    now = datetime.now(UTC)
    ended = (_utc(assembly.ended_at) if assembly is not None else None) or now
    if on_scan:
        record.progress = _scan_progress(record, assembly, ended if ending else now)
    else:
        record.progress = _progress(record, cached | seen, ended if ending else now)
    if ending is None:
        record.state = "running" if started else "queued"
        if record.model_dump(include=_TRACKED) != before:
            store.update_dataset(record, _TRACKED)
        return record
    if not store.claim_final(record.id):
        return store.get_dataset(record.id) or record
    try:
        _end(context, record, *ending, ended)
    except BaseException:
        store.release_final(record.id)
        raise
    return record


def expires_at(context: ServiceContext, record: DatasetRecord) -> datetime | None:
    """When a finished dataset's bundle is removed; None for the others."""
    if record.state != "finished" or record.ended_at is None:
        return None
    return record.ended_at + timedelta(seconds=context.settings.bundle_ttl_s)


def expire_if_due(context: ServiceContext, record: DatasetRecord) -> DatasetRecord:
    """Remove a finished bundle past its expiry; the record becomes ``expired`` for ``bundle_ttl_s``."""
    due = expires_at(context, record)
    if due is None or datetime.now(UTC) < due:
        return record
    shutil.rmtree(dataset_dir(context.settings, record.id), ignore_errors=True)
    record.state = "expired"
    context.store.update_dataset(record, {"state"}, ttl_s=context.settings.bundle_ttl_s)
    log.info("dataset %s expired, its bundle is removed", record.id)
    return record


def public(context: ServiceContext, record: DatasetRecord) -> DatasetPublic:
    """The client's view of a record (not ``expired``)."""
    if record.state == "expired":
        raise ValueError(f"dataset {record.id} expired: it has no public view")
    finished = record.state == "finished"
    return DatasetPublic(
        id=record.id,
        state=record.state,
        n=record.request.n,
        seed=record.seed,
        progress=record.progress,
        error=record.error,
        download_url=f"/datasets/{record.id}/download" if finished else None,
        sha256=record.sha256 if finished else None,
        size_bytes=record.size_bytes if finished else None,
        created_at=record.created_at,
        expires_at=expires_at(context, record),
    )


def sweep(context: ServiceContext) -> None:
    """Refresh every unfinished dataset, remove expired bundles, unindex records Redis dropped, remove
    the files of expired lesion and scan sets that no queued or running dataset uses."""
    in_use: set[Path] = set()
    for dataset_id in context.store.dataset_ids():
        try:
            record = context.store.get_dataset(dataset_id)
            if record is None:
                context.store.unindex_dataset(dataset_id)
            else:
                record = expire_if_due(context, refresh(context, record))
                if record.state not in FINAL_STATES:
                    sources = (record.lesion_source, record.structure_source)
                    in_use |= {source for source in sources if isinstance(source, Path)}
        except (RedisError, OSError) as error:
            log.warning("sweep: dataset %s: %s", dataset_id, error)
    for kind in UPLOAD_KINDS:
        try:
            expire_uploads(context, kind, in_use)
        except (RedisError, OSError) as error:
            log.warning("sweep: %ss: %s", kind.noun, error)
