"""Settings of the worker and the service, read from the environment (pydantic-settings).

Every field can be set as ``MRISYNTH_<FIELD>`` (e.g. ``MRISYNTH_CHUNK_SIZE=32``); the Redis URL also as
plain ``REDIS_URL``. Use :func:`get_settings` (cached) rather than building ``Settings`` at import time.
"""

from functools import cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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


@cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
