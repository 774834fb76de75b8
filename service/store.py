"""The service's records in Redis, so that any number of API processes share them.

Keys, under ``mrisynth:<queue>:`` (one deployment per queue):

- ``dataset:<id>``: hash of a :class:`DatasetRecord`, one JSON value per field, and ``chunk:<c>``
  fields caching each chunk job's last progress (RQ forgets finished jobs after a while);
- ``datasets``: sorted set of every dataset id by creation time (the sweep and the metrics walk it);
- ``owner:<owner>:datasets``: the same per owner; ``owner:<owner>:active``: set of its queued or
  running dataset ids, the per-key job limit;
- ``idempotency:<owner>:<sha256 of the key>``: ``<dataset id> <request fingerprint>``, expiring;
- ``lesion-set:<id>`` and ``scan-set:<id>``: hash of an uploaded set's record (:data:`LESION_SETS`,
  :data:`SCAN_SETS`), expiring at its ``expires_at``; ``owner:<owner>:lesion-sets`` and
  ``owner:<owner>:scan-sets``: sorted set of the owner's set ids of that kind by creation time (ids whose
  record expired are dropped from it when it is read).

Owners are the sha256 of their API key (:func:`service.auth.owner_of`), never the key.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast

from pydantic import BaseModel
from redis import Redis
from redis.typing import EncodableT, FieldT

from service.schemas import DatasetCreate, DatasetState, LesionSetPublic, Progress, ScanSetPublic
from worker.jobs import DatasetSpec, assembly_job_id, chunk_job_id
from worker.request import LesionSourceName, StructureSourceName, SynthesisRequest

RecordState = DatasetState | Literal["expired"]
"""A dataset's stored state: the public ones, and ``expired`` once its bundle was removed."""

FINAL_STATES: frozenset[str] = frozenset({"finished", "failed", "cancelled", "expired"})
"""States a dataset never leaves (but for ``finished`` -> ``expired``)."""


class DatasetRecord(BaseModel):
    """A dataset as the service keeps it.

    Attributes:
        id: the dataset's id (also its RQ job ids' prefix).
        owner: sha256 hex of the owner's API key.
        created_at: when it was asked for (UTC).
        request: the request as the client sent it.
        seed: the seed used: the request's, or a random one drawn for it.
        lesion_source: what the jobs got: ``library``, ``none`` or a lesion set's directory.
        structure_source: ``noise``, or a scan's folder: a scan set's (``POST /scan-sets``) or, for a
            translation, the scan uploaded with it (inside the dataset's own folder, so it goes with it).
        task: ``synthesis`` or ``translation`` (``POST /translations``) of the scan.
        chunk_size: samples per chunk job.
        state: see :data:`RecordState`.
        progress: the last progress seen.
        error: why it failed.
        sha256: hex sha256 of the finished zip.
        size_bytes: size of the finished zip.
        started_at: when its first chunk started.
        ended_at: when it reached a final state.
    """

    id: str
    owner: str
    created_at: datetime
    request: DatasetCreate
    seed: int
    lesion_source: LesionSourceName | Path
    structure_source: StructureSourceName | Path = "noise"
    task: Literal["synthesis", "translation"] = "synthesis"
    chunk_size: int
    state: RecordState = "queued"
    progress: Progress
    error: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def spec(self) -> DatasetSpec:
        """The job arguments of the dataset (:func:`worker.jobs.enqueue_dataset`)."""
        asked = self.request
        return DatasetSpec(
            dataset_id=self.id,
            n=asked.n,
            seed=self.seed,
            request=SynthesisRequest(
                modalities=tuple(asked.modalities),
                lesion_source=self.lesion_source,
                structure_source=self.structure_source,
                thresholds=asked.thresholds,
                lesion=asked.lesion,
            ),
            bundle=asked.bundle_options(),
            chunk_size=self.chunk_size,
            task=self.task,
        )

    def uses(self, folder: Path) -> bool:
        """Whether the dataset reads an uploaded set's folder, as its lesion or structure source."""
        return folder in (self.lesion_source, self.structure_source)

    def job_ids(self) -> list[str]:
        """RQ job ids of the dataset: its assembly job's, then each chunk job's in order."""
        chunks = range(len(self.spec().chunks()))
        return [assembly_job_id(self.id), *(chunk_job_id(self.id, chunk) for chunk in chunks)]


@dataclass(frozen=True)
class TranslationUpload:
    """A scan checked and staged for a new translation (:mod:`service.translations`).

    Attributes:
        dataset_id: the dataset's id, chosen before the upload was staged.
        folder: the scan's folder, ``<dataset folder>/scan``.
        slices: the scan's axial slices (1 for a 2D scan).
    """

    dataset_id: str
    folder: Path
    slices: int


class LesionSetRecord(LesionSetPublic):
    """An uploaded lesion set and its owner (sha256 hex of the owner's API key)."""

    owner: str


class ScanSetRecord(ScanSetPublic):
    """An uploaded scan set and its owner (sha256 hex of the owner's API key)."""

    owner: str


R = TypeVar("R", LesionSetRecord, ScanSetRecord)
"""The record of an uploaded set."""


@dataclass(frozen=True)
class UploadKind(Generic[R]):
    """A kind of uploaded set: how its records are keyed and named.

    Attributes:
        noun: what one is called in messages, ``lesion set``.
        key: its record's key stem, ``lesion-set``; ``<key>s`` names its owner index, its folder under
            ``data_dir`` and its route.
        record: its record class.
    """

    noun: str
    key: str
    record: type[R]

    @property
    def plural(self) -> str:
        """``lesion-sets``: the owner index, the ``data_dir`` folder and the route of the kind."""
        return self.key + "s"

    @property
    def id_field(self) -> str:
        """The path parameter naming one, ``lesion_set_id``."""
        return self.key.replace("-", "_") + "_id"


LESION_SETS = UploadKind("lesion set", "lesion-set", LesionSetRecord)
"""Label files to draw lesions from (``POST /lesion-sets``)."""

SCAN_SETS = UploadKind("scan set", "scan-set", ScanSetRecord)
"""One case's registered modalities to synthesize on (``POST /scan-sets``)."""

UPLOAD_KINDS: tuple[UploadKind[Any], ...] = (LESION_SETS, SCAN_SETS)
"""Every kind of uploaded set."""


def _text(value: bytes | str) -> str:
    """A Redis answer as text (the store's client decodes; this is for the type checker)."""
    return value if isinstance(value, str) else value.decode()


def _dump(model: BaseModel, fields: set[str] | None = None) -> dict[FieldT, EncodableT]:
    dumped: dict[FieldT, EncodableT] = {
        key: json.dumps(value) for key, value in model.model_dump(mode="json", include=fields).items()
    }
    return dumped


_CHUNK_PREFIX = "chunk:"
_FINAL_CLAIM = "final_claim"


def _load(raw: dict[bytes | str, bytes | str]) -> dict[str, Any]:
    fields = {_text(key): _text(value) for key, value in raw.items()}
    return {
        key: json.loads(value)
        for key, value in fields.items()
        if not key.startswith(_CHUNK_PREFIX) and key != _FINAL_CLAIM
    }


class Store:
    """Dataset and uploaded-set records in one Redis database.

    Args:
        redis: a client with ``decode_responses=True``.
        namespace: key prefix, e.g. ``mrisynth:<queue>:``.
    """

    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace

    def _key(self, *parts: str) -> str:
        return self.namespace + ":".join(parts)

    def add_dataset(self, record: DatasetRecord) -> None:
        """Save a new dataset record and index it under its owner."""
        score = record.created_at.timestamp()
        with self.redis.pipeline() as pipe:
            pipe.hset(self._key("dataset", record.id), mapping=_dump(record))
            pipe.zadd(self._key("datasets"), {record.id: score})
            pipe.zadd(self._key("owner", record.owner, "datasets"), {record.id: score})
            pipe.execute()

    def update_dataset(self, record: DatasetRecord, fields: set[str], ttl_s: int | None = None) -> None:
        """Write some fields of a record (which must exist); ``ttl_s``: then let Redis drop it."""
        key = self._key("dataset", record.id)
        with self.redis.pipeline() as pipe:
            pipe.hset(key, mapping=_dump(record, fields))
            if ttl_s is not None:
                pipe.expire(key, ttl_s)
            pipe.execute()

    def claim_final(self, dataset_id: str) -> bool:
        """True for exactly one caller per dataset: the one that records its final state."""
        return bool(self.redis.hsetnx(self._key("dataset", dataset_id), _FINAL_CLAIM, "1"))

    def release_final(self, dataset_id: str) -> None:
        """Give up a :meth:`claim_final` whose final state could not be recorded, so that a later
        refresh records it."""
        self.redis.hdel(self._key("dataset", dataset_id), _FINAL_CLAIM)

    def get_dataset(self, dataset_id: str) -> DatasetRecord | None:
        """The record, or None if there is none (never made, or dropped)."""
        raw = self.redis.hgetall(self._key("dataset", dataset_id))
        return DatasetRecord.model_validate(_load(raw), strict=False) if raw else None

    def dataset_ids(self, owner: str | None = None, limit: int | None = None) -> list[str]:
        """Dataset ids, newest first: every one, or an owner's."""
        key = self._key("datasets") if owner is None else self._key("owner", owner, "datasets")
        members = cast(list[bytes | str], self.redis.zrevrange(key, 0, -1 if limit is None else limit - 1))
        return [_text(member) for member in members]

    def summaries(self) -> list[tuple[str, Progress]]:
        """(state, progress) of every dataset record, for the metrics."""
        ids = self.dataset_ids()
        with self.redis.pipeline() as pipe:
            for dataset_id in ids:
                pipe.hmget(self._key("dataset", dataset_id), "state", "progress")
            rows = pipe.execute()
        return [
            (json.loads(state), Progress.model_validate_json(progress))
            for state, progress in rows
            if state is not None and progress is not None
        ]

    def forget_dataset(self, record: DatasetRecord) -> None:
        """Drop a record and its index entries."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self._key("dataset", record.id))
            pipe.zrem(self._key("datasets"), record.id)
            pipe.zrem(self._key("owner", record.owner, "datasets"), record.id)
            pipe.srem(self._key("owner", record.owner, "active"), record.id)
            pipe.execute()

    def unindex_dataset(self, dataset_id: str, owner: str | None = None) -> None:
        """Drop the index entries of a record that Redis dropped (its TTL ran out): from the list of
        every dataset, and from its owner's if given."""
        with self.redis.pipeline() as pipe:
            pipe.zrem(self._key("datasets"), dataset_id)
            if owner is not None:
                pipe.zrem(self._key("owner", owner, "datasets"), dataset_id)
            pipe.execute()

    def chunk_progress(self, dataset_id: str) -> dict[int, dict[str, Any]]:
        """The cached last progress of each chunk job, by chunk index."""
        raw = self.redis.hgetall(self._key("dataset", dataset_id))
        fields = {_text(key): _text(value) for key, value in raw.items()}
        return {
            int(key.removeprefix(_CHUNK_PREFIX)): json.loads(value)
            for key, value in fields.items()
            if key.startswith(_CHUNK_PREFIX)
        }

    def save_chunk_progress(self, dataset_id: str, progress: dict[int, dict[str, Any]]) -> None:
        """Cache chunk jobs' progress (see :meth:`chunk_progress`)."""
        if progress:
            mapping: dict[FieldT, EncodableT] = {
                f"{_CHUNK_PREFIX}{chunk:05d}": json.dumps(value) for chunk, value in progress.items()
            }
            self.redis.hset(self._key("dataset", dataset_id), mapping=mapping)

    def drop_chunk_progress(self, dataset_id: str) -> None:
        """Forget the chunk jobs' cached progress (an ended dataset's record keeps the sums)."""
        key = self._key("dataset", dataset_id)
        fields = [_text(field) for field in self.redis.hkeys(key)]
        chunks = [field for field in fields if field.startswith(_CHUNK_PREFIX)]
        if chunks:
            self.redis.hdel(key, *chunks)

    def reserve_active(self, owner: str, dataset_id: str, limit: int) -> bool:
        """Count a dataset as active for its owner, unless that makes more than ``limit``.

        Adding first and counting after means two racing requests can both be refused, never both let
        through past the limit.
        """
        key = self._key("owner", owner, "active")
        with self.redis.pipeline() as pipe:
            pipe.sadd(key, dataset_id)
            pipe.scard(key)
            _, count = pipe.execute()
        if count > limit:
            self.release_active(owner, dataset_id)
            return False
        return True

    def release_active(self, owner: str, dataset_id: str) -> None:
        """No longer count a dataset as active."""
        self.redis.srem(self._key("owner", owner, "active"), dataset_id)

    def active_ids(self, owner: str) -> set[str]:
        """Ids of the owner's datasets counted as active."""
        return {_text(member) for member in self.redis.smembers(self._key("owner", owner, "active"))}

    def idempotent(self, owner: str, key_hash: str) -> tuple[str, str] | None:
        """(dataset id, request fingerprint) an idempotency key was used for, if it was."""
        value = self.redis.get(self._key("idempotency", owner, key_hash))
        if value is None:
            return None
        dataset_id, fingerprint = _text(value).split(" ", 1)
        return dataset_id, fingerprint

    def claim_idempotency(
        self, owner: str, key_hash: str, dataset_id: str, fingerprint: str, ttl_s: int
    ) -> bool:
        """Bind an idempotency key to a dataset, unless another request bound it first."""
        key = self._key("idempotency", owner, key_hash)
        return bool(self.redis.set(key, f"{dataset_id} {fingerprint}", nx=True, ex=ttl_s))

    def release_idempotency(self, owner: str, key_hash: str) -> None:
        """Unbind an idempotency key (its dataset could not be made)."""
        self.redis.delete(self._key("idempotency", owner, key_hash))

    def add_upload(self, kind: UploadKind[R], record: R, limit: int) -> bool:
        """Save an uploaded set's record, expiring at its ``expires_at``, and index it under its owner,
        unless that makes the owner hold more than ``limit`` sets of its kind (then nothing is saved).

        Adding first and counting after means two racing uploads can both be refused, never both let
        through past the limit.
        """
        key, index = self._key(kind.key, record.id), self._key("owner", record.owner, kind.plural)
        self.uploads(kind, record.owner)
        with self.redis.pipeline() as pipe:
            pipe.hset(key, mapping=_dump(record))
            pipe.expireat(key, record.expires_at)
            pipe.zadd(index, {record.id: record.created_at.timestamp()})
            pipe.zcard(index)
            *_, count = pipe.execute()
        if count > limit:
            self.forget_upload(kind, record)
            return False
        return True

    def get_upload(self, kind: UploadKind[R], upload_id: str) -> R | None:
        """The uploaded set's record, or None."""
        raw = self.redis.hgetall(self._key(kind.key, upload_id))
        return kind.record.model_validate(_load(raw)) if raw else None

    def uploads(self, kind: UploadKind[R], owner: str) -> list[R]:
        """The owner's sets of a kind, newest first; ids whose record expired leave its index."""
        index = self._key("owner", owner, kind.plural)
        ids = [_text(member) for member in cast(list[bytes | str], self.redis.zrevrange(index, 0, -1))]
        with self.redis.pipeline() as pipe:
            for upload_id in ids:
                pipe.hgetall(self._key(kind.key, upload_id))
            rows = pipe.execute()
        gone = [upload_id for upload_id, raw in zip(ids, rows, strict=True) if not raw]
        if gone:
            self.redis.zrem(index, *gone)
        return [kind.record.model_validate(_load(raw)) for raw in rows if raw]

    def forget_upload(self, kind: UploadKind[R], record: R) -> None:
        """Drop an uploaded set's record and its index entry."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self._key(kind.key, record.id))
            pipe.zrem(self._key("owner", record.owner, kind.plural), record.id)
            pipe.execute()
