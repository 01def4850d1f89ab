"""Service settings, read once from the environment (prefix ``POSECOMPRESS_``).

Every process (API, worker, ``serve`` supervisor) calls :func:`get_settings` once and
passes the result down. ``serve`` hands its resolved settings to its children through
the same environment variables, so all processes agree.
"""

from __future__ import annotations

import hashlib
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


def embedded_socket_path(data_dir: Path) -> Path:
    """``<data_dir>/redis/redis.sock``, or a short path in the temp dir when that is too
    long for a unix socket (keyed by a hash of the data dir, so it is stable). The embedded
    Redis (``app.embedded.redis_server``) listens there; workers and the API connect to it."""
    preferred = data_dir / "redis" / "redis.sock"
    if len(str(preferred)) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"posecompress-{digest}.sock"


class Settings(BaseSettings):
    """All runtime configuration. Each field is settable as ``POSECOMPRESS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="POSECOMPRESS_", extra="ignore")

    data_dir: Path = Path("./posecompress-data")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    job_workers: int = Field(default=1, ge=1, le=64)

    redis_url: str | None = None
    """Broker URL. ``None`` means embedded mode: ``serve`` starts a private Redis."""
    database_url: str | None = None
    """SQLAlchemy URL. ``None`` means SQLite under ``data_dir``."""

    api_key: str | None = None
    """When set, every write endpoint requires the ``X-API-Key`` header."""
    predict_requires_key: bool = True
    """With ``api_key`` set, the predict POSTs need the key too (false: they are open)."""

    max_upload_bytes: int = Field(default=512 * MIB, ge=1)
    max_image_bytes: int = Field(default=20 * MIB, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_dataset_members: int = Field(default=20_000, ge=1)
    max_dataset_uncompressed_bytes: int = Field(default=2048 * MIB, ge=1)
    max_annotations_bytes: int = Field(default=64 * MIB, ge=1)
    """A dataset's ``annotations.json``, uncompressed (it is parsed in the API process)."""

    ort_threads: int = Field(default=2, ge=1)
    session_cache_size: int = Field(default=4, ge=1)
    inference_slots: int | None = Field(default=None, ge=1)
    """Images ``/predict`` decodes and runs at once; unset: cores // ``ort_threads`` + 1."""
    import_default: bool = True
    """``serve`` imports the built-in model ``blazepose-full`` on first start (background)."""
    asset_dir: Path | None = None
    """Cache of the mediapipe wheel / BlazePose ``.tflite`` files; default ``data_dir/assets``."""

    task_time_limit: int = Field(default=3 * 3600, ge=61)
    """Hard Celery time limit per job, seconds (the soft limit is 60 s less)."""
    max_training_steps: int = Field(default=20_000, ge=0)
    """Training steps one compression step may ask for (recovery, distill, QAT)."""
    job_max_attempts: int = Field(default=3, ge=1)
    job_heartbeat_s: float = Field(default=5.0, gt=0)
    job_stale_after_s: float = Field(default=60.0, gt=0)

    log_level: str = "INFO"

    @field_validator("redis_url", "database_url", "api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``POSECOMPRESS_API_KEY=`` (e.g. from compose) means "not set"."""
        return None if isinstance(value, str) and value.strip() == "" else value

    @property
    def soft_time_limit(self) -> int:
        """Seconds a job may run before Celery asks it to stop; a training time budget fits."""
        return self.task_time_limit - 60

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_asset_dir(self) -> Path:
        if self.asset_dir is not None:
            return self.asset_dir.expanduser().resolve()
        return self.resolved_data_dir / "assets"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'metadata.sqlite3'}"

    @property
    def effective_redis_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"redis+socket://{embedded_socket_path(self.resolved_data_dir)}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first call."""
    return Settings()
