"""Settings of the worker and the service, read from the environment (pydantic-settings).

Every field can be set as ``MRISYNTH_<FIELD>`` (e.g. ``MRISYNTH_CHUNK_SIZE=32``); the Redis URL also as
plain ``REDIS_URL``. Use :func:`get_settings` (cached) rather than building ``Settings`` at import time.
"""

import json
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEMO_ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "demo"
"""The committed demo artifacts (``mrisynth export`` of the demo preset), the default model."""


class Settings(BaseSettings):
    """Where things are and how jobs run.

    Attributes:
        redis_url: Redis of the job queue, e.g. ``redis://localhost:6379/0``; None: none configured.
        artifacts_dir: exported model artifacts the workers load (default: the committed demo).
        data_dir: where datasets (chunks, bundles) and uploaded lesion sets are stored.
        queue: name of the RQ queue of synthesis jobs.
        chunk_size: samples per chunk job, >= 1 (default 16).
        batch_size: candidates per batched network call inside a chunk, >= 1 (default 16).
        chunk_timeout_s: longest a chunk job may run before RQ stops it (default 1 hour).
        chunk_retries: retries of a chunk whose worker crashed or died (default 3).
        job_monitoring_interval_s: how often a worker renews the heartbeat of the job it runs.
        heartbeat_grace_s: how long past a missed heartbeat a job counts as abandoned and is retried.
        maintenance_interval_s: how often a worker looks for abandoned jobs of dead workers.
        api_keys: bearer tokens the service accepts, each the identity of an owner; from the environment
            a JSON list or a comma-separated string. Empty (default): no authentication, every request
            belongs to one local owner, and the service must only listen on the loopback.
        max_n: most samples one dataset may ask for, 1 to 100000 (default 10000).
        max_active_jobs_per_key: datasets one key may have queued or running at once, >= 1 (default 4).
        bundle_ttl_s: seconds a finished bundle is kept after its dataset finished (default 1 day); then
            its files are removed and the dataset answers 404.
        owner_disk_quota_bytes: bytes one key may store under ``data_dir`` (its datasets' folders and
            its lesion sets); at it, its new datasets and lesion sets are refused (default 10 GiB).
        max_datasets_per_owner: datasets one key may store (with files, or queued or running), >= 1
            (default 100).
        max_lesion_sets_per_owner: lesion sets one key may store, and scan sets, each kind apart, >= 1
            (default 20).
        lesion_set_ttl_s: seconds a lesion or scan set is kept after its upload (default 7 days); then its
            record and, once no queued or running dataset uses them, its files are removed.
        max_lesion_set_slices: axial slices of all the files of one lesion set (a 2D file is one),
            checked from their headers by the service and the workers alike, >= 1 (default 4096: the
            lesion pool of a set is at most this many image-size slices).
        max_lesion_set_voxels: voxels of all the files of one lesion set (each file also at most
            2 x 240 x 240 x 155), >= 1 (default 16 x 240 x 240 x 155).
        upload_parsers: processes checking uploaded files, the most checks at once, >= 1 (default 2).
        upload_parse_timeout_s: longest an upload's check may take, waiting for a parser included,
            before it is answered 503 (default 30 s).
        max_upload_bytes: largest request body the service reads, such as a lesion-set upload with all
            its files and multipart overhead (default 64 MiB).
        max_upload_files: most label files in one lesion-set upload, >= 1 (default 64).
        sweep_interval_s: how often the service refreshes unfinished datasets and removes expired
            bundles (default 60 s).
        onnx_intra_op_threads: threads of one network call, >= 0 (default 0: onnxruntime's choice, one per
            physical core); 1 when a machine runs one worker per core.
        onnx_inter_op_threads: threads running independent nodes at once with ``onnx_execution_mode``
            ``"parallel"``, >= 0 (default 0: onnxruntime's choice).
        onnx_execution_mode: ``"sequential"`` (default) or ``"parallel"`` node scheduling; our networks
            are chains of convolutions, and parallel mode was slower on them.
        onnx_graph_optimization: onnxruntime's graph optimization level, ``"disable"``, ``"basic"``,
            ``"extended"`` or ``"all"`` (default, with the CPU layout transforms). The level changes the
            last bits of the images (up to 5e-6 measured), so every worker of one deployment must use
            the same level for their samples to be the same; the thread counts and the arena do not.
        onnx_cpu_mem_arena: onnxruntime's CPU memory arena (default True).
        onnx_allow_spinning: idle intra-op threads spin instead of sleeping (default False: a worker
            shares its cores with other processes, and spinning halved throughput on a busy 2-core
            machine).
    """

    model_config = SettingsConfigDict(env_prefix="MRISYNTH_", extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "MRISYNTH_REDIS_URL")
    )
    artifacts_dir: Path = DEMO_ARTIFACTS
    data_dir: Path = Path("var")
    queue: str = "mrisynth"
    chunk_size: int = Field(default=16, ge=1)
    batch_size: int = Field(default=16, ge=1)
    chunk_timeout_s: int = Field(default=3600, ge=1)
    chunk_retries: int = Field(default=3, ge=1)
    job_monitoring_interval_s: int = Field(default=10, ge=1)
    heartbeat_grace_s: int = Field(default=60, ge=1)
    maintenance_interval_s: int = Field(default=60, ge=1)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_n: int = Field(default=10_000, ge=1, le=100_000)
    max_active_jobs_per_key: int = Field(default=4, ge=1)
    bundle_ttl_s: int = Field(default=86_400, ge=1)
    owner_disk_quota_bytes: int = Field(default=10 << 30, ge=1)
    max_datasets_per_owner: int = Field(default=100, ge=1)
    max_lesion_sets_per_owner: int = Field(default=20, ge=1)
    lesion_set_ttl_s: int = Field(default=7 * 86_400, ge=1)
    max_lesion_set_slices: int = Field(default=4096, ge=1)
    max_lesion_set_voxels: int = Field(default=16 * 240 * 240 * 155, ge=1)
    upload_parsers: int = Field(default=2, ge=1)
    upload_parse_timeout_s: float = Field(default=30.0, gt=0)
    max_upload_bytes: int = Field(default=64 << 20, ge=1)
    max_upload_files: int = Field(default=64, ge=1)
    sweep_interval_s: float = Field(default=60.0, gt=0)
    onnx_intra_op_threads: int = Field(default=0, ge=0)
    onnx_inter_op_threads: int = Field(default=0, ge=0)
    onnx_execution_mode: Literal["sequential", "parallel"] = "sequential"
    onnx_graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    onnx_cpu_mem_arena: bool = True
    onnx_allow_spinning: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """``MRISYNTH_API_KEYS`` as a JSON list (``["k1", "k2"]``) or comma-separated (``k1,k2``)."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [key.strip() for key in value.split(",") if key.strip()]


@cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
