"""Datasets on behalf of an owner: create (with idempotency keys and limits), find, list, delete.

Creating one checks, in order: ``n`` against ``max_n``, the lesion and structure sources (the caller's
own lesion set, scan set), the idempotency key (a replay returns the first dataset), the owner's quotas
and active jobs. Only then is the record saved and the jobs queued (:func:`worker.jobs.enqueue_dataset`);
if that fails, record, reservation, key and any job already queued are undone, so a refused or failed
request leaves nothing behind.
"""

import hashlib
import json
import logging
import math
import secrets
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from fastapi import HTTPException, status
from redis.exceptions import RedisError
from rq.job import Job
from rq.serializers import JSONSerializer

from service.context import ServiceContext
from service.quotas import check_dataset_quota
from service.schemas import MAX_SEED, DatasetCreate, Progress
from service.status import expire_if_due, refresh
from service.store import (
    FINAL_STATES,
    LESION_SETS,
    SCAN_SETS,
    DatasetRecord,
    R,
    TranslationUpload,
    UploadKind,
)
from service.uploads import find_upload, upload_dir
from worker.jobs import cancel_dataset, dataset_dir, enqueue_dataset, owner_queue
from worker.request import LesionSourceName, StructureSourceName

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_S = 86_400
"""How long an ``Idempotency-Key`` stays bound to its dataset."""


def _not_found(dataset_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"dataset_id: no dataset {dataset_id!r}")


def _uploaded(
    context: ServiceContext, owner: str, kind: UploadKind[R], source: str, field: str, names: str
) -> R:
    """The owner's set ``source`` of a kind, else 422 naming ``field`` and its built-in ``names``."""
    record = find_upload(context, kind, owner, source)
    if record is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{field}: no {kind.noun} {source!r} of yours; use {names} or the id of a {kind.noun} you "
            f"uploaded (POST /{kind.plural})",
        )
    return record


def _lesion_source(context: ServiceContext, owner: str, source: str) -> LesionSourceName | Path:
    """``library``, ``none``, or the directory of the owner's lesion set ``source`` (else 422)."""
    if source == "library":
        return "library"
    if source == "none":
        return "none"
    record = _uploaded(context, owner, LESION_SETS, source, "lesion_source", "'library', 'none'")
    return upload_dir(context.settings, LESION_SETS, record.id)


def _structure_source(
    context: ServiceContext, owner: str, source: str
) -> tuple[StructureSourceName | Path, int]:
    """``noise``, or the directory of the owner's scan set ``source`` (else 422), and the slices each
    sample has: 1, or the scan's axial slices."""
    if source == "noise":
        return "noise", 1
    record = _uploaded(context, owner, SCAN_SETS, source, "structure_source", "'noise'")
    return upload_dir(context.settings, SCAN_SETS, record.id), math.prod(record.shape[2:])


def _replay(context: ServiceContext, owner: str, key_hash: str, fingerprint: str) -> DatasetRecord | None:
    """The dataset an idempotency key made, if it still exists; 409 if it was for another request."""
    bound = context.store.idempotent(owner, key_hash)
    if bound is None:
        return None
    dataset_id, first = bound
    if first != fingerprint:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"Idempotency-Key: already used for a different request (dataset {dataset_id}); "
            "use a new key for a new request",
        )
    record = context.store.get_dataset(dataset_id)
    if record is not None:
        record = expire_if_due(context, refresh(context, record))
    if record is None or record.state == "expired":
        context.store.release_idempotency(owner, key_hash)
        return None
    return record


def _drop_jobs(context: ServiceContext, record: DatasetRecord) -> None:
    """Delete the jobs of a dataset whose queueing failed half-way (chunks queued, assembly not), so
    that no worker runs them; best effort, as Redis may be what failed."""
    try:
        jobs = Job.fetch_many(record.job_ids(), connection=context.connection, serializer=JSONSerializer)
        for job in jobs:
            if job is not None:
                job.delete()
    except RedisError as error:
        log.warning("dataset %s: could not delete its queued jobs: %s", record.id, error)


def create_dataset(
    context: ServiceContext,
    owner: str,
    body: DatasetCreate,
    idempotency_key: str | None,
    translation: TranslationUpload | None = None,
) -> DatasetRecord:
    """Queue a dataset for the owner, or return the one the same idempotency key made.

    With ``translation`` (:mod:`service.translations`), the dataset translates that uploaded scan: its id
    and folder are the upload's, ``structure_source`` its scan folder, ``task`` ``translation``.

    Raises:
        HTTPException: 422 for ``n`` above ``max_n`` (on a scan: ``n`` times its slices), or a lesion or
            structure source that is not the caller's; 409 for a reused idempotency key or a quota of the
            owner; 429 for too many active datasets.
    """
    settings, store = context.settings, context.store
    if body.n > settings.max_n:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"n: at most {settings.max_n} samples per dataset (the service's max_n), got {body.n}",
        )
    lesion_source = _lesion_source(context, owner, body.lesion_source)
    structure_source: StructureSourceName | Path
    if translation is not None:
        structure_source, slices, scan = translation.folder, translation.slices, "the uploaded scan's"
    else:
        structure_source, slices = _structure_source(context, owner, body.structure_source)
        scan = "the scan set's"
    if body.n * slices > settings.max_n:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"n: {body.n} volumes of {scan} {slices} slices are {body.n * slices} slices, more than the "
            f"{settings.max_n} a dataset may make (the service's max_n)",
        )
    on_scan = isinstance(structure_source, Path)
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True)
    fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
    key_hash = hashlib.sha256(idempotency_key.encode()).hexdigest() if idempotency_key else None
    if key_hash is not None and (replayed := _replay(context, owner, key_hash, fingerprint)):
        return replayed
    check_dataset_quota(context, owner)
    record = DatasetRecord(
        id=translation.dataset_id if translation is not None else uuid.uuid4().hex,
        owner=owner,
        created_at=datetime.now(UTC),
        request=body,
        seed=body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1),
        lesion_source=lesion_source,
        structure_source=structure_source,
        task="translation" if translation is not None else "synthesis",
        chunk_size=settings.chunk_size,
        progress=Progress(
            accepted=0,
            target=body.n,
            rejected={},
            samples_per_s=None,
            eta_s=None,
            slices_done=0 if on_scan else None,
            slices_total=body.n * slices if on_scan else None,
        ),
    )
    if not store.reserve_active(owner, record.id, settings.max_active_jobs_per_key):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many active datasets: {settings.max_active_jobs_per_key} of this key's datasets are "
            "queued or running (the service's max_active_jobs_per_key); wait for one to end or delete one",
        )
    store.add_dataset(record)
    try:
        if key_hash is not None and not store.claim_idempotency(
            owner, key_hash, record.id, fingerprint, IDEMPOTENCY_TTL_S
        ):
            store.forget_dataset(record)
            replayed = _replay(context, owner, key_hash, fingerprint)
            if replayed is None:
                raise HTTPException(
                    status.HTTP_409_CONFLICT, "Idempotency-Key: in use by a request that failed; retry"
                )
            return replayed
        enqueue_dataset(owner_queue(context.connection, owner, settings), record.spec(), settings)
    except Exception:
        store.forget_dataset(record)
        _drop_jobs(context, record)
        if key_hash is not None and store.idempotent(owner, key_hash) == (record.id, fingerprint):
            store.release_idempotency(owner, key_hash)
        raise
    log.info("dataset %s queued: n=%d, seed %d", record.id, body.n, record.seed)
    return record


def find_dataset(context: ServiceContext, owner: str, dataset_id: str) -> DatasetRecord:
    """The owner's dataset, up to date; 404 if there is none, it is another owner's or it expired."""
    record = context.store.get_dataset(dataset_id)
    if record is None or record.owner != owner:
        raise _not_found(dataset_id)
    record = expire_if_due(context, refresh(context, record))
    if record.state == "expired":
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"dataset_id: dataset {dataset_id!r} expired and its files were removed",
        )
    return record


def list_datasets(context: ServiceContext, owner: str, limit: int) -> list[DatasetRecord]:
    """The owner's datasets, newest first, up to date, without expired ones."""
    records = []
    for dataset_id in context.store.dataset_ids(owner, limit):
        record = context.store.get_dataset(dataset_id)
        if record is None:
            context.store.unindex_dataset(dataset_id, owner)
            continue
        record = expire_if_due(context, refresh(context, record))
        if record.state != "expired":
            records.append(record)
    return records


def delete_dataset(context: ServiceContext, record: DatasetRecord) -> None:
    """Cancel a queued or running dataset (it stays ``cancelled`` for ``bundle_ttl_s``); remove an
    ended one (then 404). Either way its files are removed."""
    store, settings = context.store, context.settings
    if record.state not in FINAL_STATES and store.claim_final(record.id):
        try:
            cancel_dataset(context.connection, record.id, settings)
            store.release_active(record.owner, record.id)
            store.drop_chunk_progress(record.id)
            record.state, record.ended_at = "cancelled", datetime.now(UTC)
            record.progress = record.progress.model_copy(update={"eta_s": None})
            store.update_dataset(record, {"state", "ended_at", "progress"}, ttl_s=settings.bundle_ttl_s)
        except BaseException:
            store.release_final(record.id)
            raise
        log.info("dataset %s cancelled", record.id)
        return
    shutil.rmtree(dataset_dir(settings, record.id), ignore_errors=True)
    store.forget_dataset(record)
    log.info("dataset %s deleted", record.id)
